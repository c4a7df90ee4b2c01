"""avjax: balanced audio-visual learning in JAX.

Fusion and modality-balancing methods (OGM-GE, MMCosine, CM-VQVAE, VAVL/AuxFormer, modality valuation,
VAT) behind one sharded trainer, fed by TensorFlow-free TFDS builders through grain.
"""

__version__ = "0.1.0"
