"""The documentation pages of the portal: the Markdown files of docs/, rendered."""
