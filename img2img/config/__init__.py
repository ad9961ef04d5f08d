"""Configuration: one pydantic-settings tree read from `IMG2IMG_*` environment variables."""
