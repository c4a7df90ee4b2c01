"""TFDS dataset builders shipped with avjax (one folder per dataset, TFDS folder convention)."""
