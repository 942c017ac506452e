"""The revisions, oldest first: 0001 is the schema that `create_all` made before migrations."""
