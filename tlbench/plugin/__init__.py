"""The plugin layer: hook specifications, the plugin manager, registries, the specs plugins register,
strategy option kinds, catalogues, the engine interface and framework-loading helpers."""
