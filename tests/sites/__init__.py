"""The fixture website for crawl tests and the crawl benchmark (generated in code)."""
