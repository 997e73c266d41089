"""HTTP resources, one blueprint each: ``health`` and ``models`` (listing and tagging)."""
