"""Private packages: uploads and their checks, the folder scan and the importer."""
