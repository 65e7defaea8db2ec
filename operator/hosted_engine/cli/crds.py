"""``hosted-engine crds``: print the CRDs generated from the models, or write them to files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "crds",
        help="print or write the CustomResourceDefinitions",
        description=(
            "Generate the CustomResourceDefinitions of hostedengine.io from the models. "
            "Without --output-dir, print them as one multi-document YAML stream; with it, "
            "write one file per CRD named <plural>.<group>.yaml."
        ),
        epilog=(
            "Examples:\n"
            "  hosted-engine crds --output-dir crds\n"
            "  hosted-engine crds | kubectl apply --server-side -f -"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="write one file per CRD into DIR (created if missing; stale files removed)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hosted_engine.models import crdgen

    if args.output_dir is None:
        sys.stdout.write(crdgen.render_multi_document())
        return 0
    for path in crdgen.write_all(args.output_dir):
        print(path)
    return 0
