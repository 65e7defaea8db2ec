"""pydantic v2 models of the custom resources; the CRDs are generated from them."""
