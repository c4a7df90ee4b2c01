"""What a build prints before and after it: avjax's lines in place of TFDS's download wording.

TFDS announces every build with "Downloading and preparing dataset Unknown size (download: Unknown
size, generated: Unknown size, total: Unknown size)" and ends it with "downloaded and prepared":
avjax's builders download nothing (they read a manual download, or generate records) and cannot
know the size in advance, so the announcement reads like something went wrong. These say what
happens instead. Errors are untouched (they are raised, not printed here).
"""

from __future__ import annotations


class BuildMessages:
  """Mixin for a tfds.core.DatasetBuilder: plain start and end lines of a build."""

  # What the records are made from, for the start line.
  BUILD_SOURCE = 'the manual download'

  def _log_download_bytes(self) -> None:
    print(f'Building {self.info.full_name} from {self.BUILD_SOURCE} into {self.data_dir} (its '
          'size is known when it is done)...', flush=True)

  def _log_download_done(self) -> None:
    print(f'Built {self.info.full_name} in {self.data_dir}; later runs read it from there.',
          flush=True)
