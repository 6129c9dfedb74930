"""Browser demos of Vigil."""
