"""open_dataset's errors: unknown builder configs name the known ones; unbuilt variants say so."""

import pytest

from avjax.config import base_config
from avjax.data.sources import DatasetNotBuiltError, open_dataset
from avjax.registry import ConfigError


def _dataset(name, config, data_dir):
  c = base_config().dataset
  c.name, c.config, c.data_dir = name, config, str(data_dir)
  return c


@pytest.mark.parametrize("name,config", [("synthetic_av", "audio_dominnt"), ("crema_d", "ogmge")])
def test_unknown_builder_config_lists_the_known_ones(tmp_path, name, config):
  with pytest.raises(ConfigError, match=f"no builder config '{config}'; its configs are \\["):
    open_dataset(_dataset(name, config, tmp_path), ["train"])
  assert not any(tmp_path.iterdir())  # Nothing built or written.


def test_a_variant_that_is_not_built_is_not_called_unknown(tmp_path):
  # Variants (named configs with overrides) exist only once built (data_builders/crema_d/README.md).
  with pytest.raises(DatasetNotBuiltError, match="a variant of its 'ogm_ge' config.*is not built"):
    open_dataset(_dataset("crema_d", "ogm_ge-split_orderspeaker", tmp_path), ["train"])
