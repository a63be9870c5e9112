"""Alert formats other than SPEC §2's own (no faust: replay uses them too)."""
