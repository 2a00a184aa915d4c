"""The proxy: the upstream client, project pages, single-flight downloads and the combined and local views."""
