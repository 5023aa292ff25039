"""The Scrapy project: the recipe-driven spider, Selenium rendering and the image pipeline."""
