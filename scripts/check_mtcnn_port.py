r"""Checks avjax's numpy MTCNN (avjax/media/faces.py) against an independent port: facenet-pytorch.

  pip download facenet-pytorch==2.6.0 --no-deps -d /tmp/fnp
  python scripts/check_mtcnn_port.py /tmp/fnp/facenet_pytorch-2.6.0-py3-none-any.whl

facenet-pytorch ships the same original MTCNN weights (as PyTorch state dicts, OIHW kernels) and
defines the three networks in PyTorch (ceil-mode pooling, a (W, H) permute before flattening). This
script (1) checks that every array of the mtcnn 1.0.0 weights equals facenet-pytorch's, transposed
to HWIO / (in, out), and (2) runs both ports' P-, R- and O-Net on the same random inputs and prints
the largest output difference. Only the networks are compared: facenet-pytorch's detection loop
needs torchvision, and its pyramid, resampling and NMS differ from mtcnn 1.0.0's anyway. Needs
torch (the `torch` extra); nothing is installed and the wheel is only unpacked into a temp folder.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import types
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import torch

from avjax.media import faces


def load_networks(wheel: str, folder: str) -> types.ModuleType:
  """facenet_pytorch/models/mtcnn.py from the wheel, without its torchvision-based helpers."""
  with zipfile.ZipFile(wheel) as z:
    z.extractall(folder)
  root = Path(folder) / 'facenet_pytorch'
  for name in ('facenet_pytorch', 'facenet_pytorch.models', 'facenet_pytorch.models.utils'):
    module = types.ModuleType(name)
    module.__path__ = [str(root / Path(*name.split('.')[1:]))]
    sys.modules[name] = module
  stub = types.ModuleType('facenet_pytorch.models.utils.detect_face')
  stub.detect_face = stub.extract_face = None  # The detection loop is not compared.
  sys.modules[stub.__name__] = stub
  spec = importlib.util.spec_from_file_location('facenet_pytorch.models.mtcnn',
                                                root / 'models' / 'mtcnn.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def main() -> None:
  if len(sys.argv) != 2:
    sys.exit(__doc__)
  weights = faces.load_weights()
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as folder:
    nets = load_networks(sys.argv[1], folder)
    reference = {'pnet': nets.PNet(), 'rnet': nets.RNet(), 'onet': nets.ONet()}
    for name, net in reference.items():
      for key, value in net.state_dict().items():
        v = value.numpy()
        v = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v.T if v.ndim == 2 else v
        match = [a for a in weights[name] if a.size == v.size and
                 np.array_equal(a.reshape(v.shape), v)]
        assert match, f'{name}.{key}: no equal array in the mtcnn weights'
    print('weights: every facenet-pytorch array equals one of the mtcnn 1.0.0 arrays')
    with torch.no_grad():
      x = rng.standard_normal((2, 41, 53, 3)).astype(np.float32)
      reg, prob = reference['pnet'](torch.from_numpy(x.transpose(0, 3, 1, 2)))
      my_reg, my_prob = faces.pnet(weights['pnet'], x)
      print(f'P-Net (2, 41, 53): offsets max |diff| '
            f'{np.abs(reg.numpy().transpose(0, 2, 3, 1) - my_reg).max():.2e}, face probability '
            f'{np.abs(prob.numpy()[:, 1] - my_prob).max():.2e}')
      x = rng.standard_normal((16, 24, 24, 3)).astype(np.float32)
      reg, prob = reference['rnet'](torch.from_numpy(x.transpose(0, 3, 1, 2)))
      my_reg, my_prob = faces.rnet(weights['rnet'], x)
      print(f'R-Net (16, 24, 24): offsets {np.abs(reg.numpy() - my_reg).max():.2e}, face '
            f'probability {np.abs(prob.numpy()[:, 1] - my_prob).max():.2e}')
      x = rng.standard_normal((16, 48, 48, 3)).astype(np.float32)
      reg, marks, prob = reference['onet'](torch.from_numpy(x.transpose(0, 3, 1, 2)))
      my_reg, my_marks, my_prob = faces.onet(weights['onet'], x)
      print(f'O-Net (16, 48, 48): offsets {np.abs(reg.numpy() - my_reg).max():.2e}, landmarks '
            f'{np.abs(marks.numpy() - my_marks).max():.2e}, face probability '
            f'{np.abs(prob.numpy()[:, 1] - my_prob).max():.2e}')


if __name__ == '__main__':
  main()
