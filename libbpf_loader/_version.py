"""Version of the C shim: bump it whenever _cffi_src changes, so a stale build fails loudly."""

SHIM_VERSION = "5"
