"""The policy's life: store (revisions), sync, runtime, edits, files, directory, service tokens."""
