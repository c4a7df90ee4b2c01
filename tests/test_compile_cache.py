"""avjax.compile_cache: where the persistent compilation cache goes, and turning it off."""

import os

import jax
import pytest

from avjax import compile_cache


@pytest.fixture
def restore_jax_cache_config():
  saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size)
  yield
  jax.config.update("jax_compilation_cache_dir", saved[0])
  jax.config.update("jax_compilation_cache_max_size", saved[1])


def test_default_dir_follows_jax_then_xdg_then_home():
  assert compile_cache.default_dir({"JAX_COMPILATION_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == "/c"
  assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x"}) == "/x/avjax/jax"
  assert compile_cache.default_dir({}) == os.path.expanduser("~/.cache/avjax/jax")


def test_enable_sets_the_directory_and_a_size_limit(tmp_path, restore_jax_cache_config):
  path = compile_cache.enable(str(tmp_path / "cache"))
  assert path == str(tmp_path / "cache") and os.path.isdir(path)
  assert jax.config.jax_compilation_cache_dir == path
  assert jax.config.jax_compilation_cache_max_size == compile_cache.DEFAULT_MAX_BYTES


@pytest.mark.parametrize("value", ["off", "OFF", ""])
def test_off_turns_it_off(value, restore_jax_cache_config):
  assert compile_cache.enable(value) is None
  assert jax.config.jax_compilation_cache_dir is None


def test_an_uncreatable_directory_warns_and_compiles_as_usual(tmp_path, caplog,
                                                              restore_jax_cache_config):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  assert compile_cache.enable(str(blocker / "cache")) is None
  assert jax.config.jax_compilation_cache_dir is None
  assert "--compilation_cache=off" in caplog.text
