"""The model store: the catalog of installed models, PyPI packs, hub pulls, profiles, bundles and ONNX export."""
