"""The packaging standards, free of network and reactor: names and filenames, records, simple API pages, archive metadata."""
