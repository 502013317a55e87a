"""Models: loading and resolving model folders, lmshrink's own model classes, Auto registration."""
