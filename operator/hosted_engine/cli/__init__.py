"""The ``hosted-engine`` command line (also ``kubectl hosted-engine``)."""
