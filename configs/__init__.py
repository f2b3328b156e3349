"""Training recipes (YAML), packaged as grpolab.configs so installed copies find them."""
