"""MLflow tracking: runs, nested sweep/child runs, reporters, and comparison tables gathered from the store."""
