"""An independent NumPy evaluation of docs/paper.md's network, written from its table and formulas.

It shares no code with alexnet_jax: convolutions are explicit sums over kernel offsets, LRN is
the paper's sum written as a loop over channels, and the towers are handled by slicing.
"""

import numpy as np


def conv(x, w, b, stride=1, pad=0, groups=1):
  """x: (N, H, W, C); w: (kh, kw, C / groups, O). Cross-correlation, as every framework does."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))).astype(np.float64)
  n, h, wd, c = x.shape
  kh, kw, cg, o = w.shape
  oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
  og = o // groups
  out = np.zeros((n, oh, ow, o))
  for g in range(groups):
    xs = x[..., g * cg:(g + 1) * cg]
    ws = w[..., g * og:(g + 1) * og].astype(np.float64)
    for i in range(kh):
      for j in range(kw):
        patch = xs[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
        out[..., g * og:(g + 1) * og] += patch @ ws[i, j]
  return out + b


def lrn(a, k=2.0, n=5, alpha=1e-4, beta=0.75, towers=2):
  """b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta within a tower."""
  out = np.empty_like(a, dtype=np.float64)
  size = a.shape[-1] // towers
  for t in range(towers):
    for i in range(size):
      lo, hi = max(0, i - n // 2), min(size - 1, i + n // 2)
      s = (a[..., t * size + lo:t * size + hi + 1].astype(np.float64) ** 2).sum(-1)
      out[..., t * size + i] = a[..., t * size + i] / (k + alpha * s) ** beta
  return out


def maxpool(x, z=3, s=2):
  n, h, w, c = x.shape
  oh, ow = (h - z) // s + 1, (w - z) // s + 1
  out = np.full((n, oh, ow, c), -np.inf)
  for i in range(z):
    for j in range(z):
      out = np.maximum(out, x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s])
  return out


def forward(params, images, conv1_padding=0, towers=2, act=lambda v: np.maximum(v, 0),
            record=None, lrn_towers=None, **lrn_constants):
  """Logits of the network at test time (dropout off), docs/paper.md's table row by row.

  `record`, a dict if given, receives each layer's input to its activation by layer name, and
  `fc7_act` the fc7 activations fc8 reads. `lrn_towers` (default: `towers`) is how many groups
  of channels LRN sums within (1: Caffe's, across the towers); `lrn_constants` are its k, n,
  alpha and beta where they differ from the paper's.
  """
  lrn_towers = towers if lrn_towers is None else lrn_towers
  norm = lambda a: lrn(a, towers=lrn_towers, **lrn_constants)
  p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
  record = {} if record is None else record

  def unit(name, y):
    record[name] = y
    return act(y)

  x = images.astype(np.float64)
  x = maxpool(norm(unit('conv1', conv(x, p['conv1']['kernel'], p['conv1']['bias'], 4,
                                      conv1_padding))))
  x = maxpool(norm(unit('conv2', conv(x, p['conv2']['kernel'], p['conv2']['bias'], 1, 2,
                                      towers))))
  x = unit('conv3', conv(x, p['conv3']['kernel'], p['conv3']['bias'], 1, 1))
  x = unit('conv4', conv(x, p['conv4']['kernel'], p['conv4']['bias'], 1, 1, towers))
  x = maxpool(unit('conv5', conv(x, p['conv5']['kernel'], p['conv5']['bias'], 1, 1, towers)))
  x = x.reshape(len(x), -1)
  x = unit('fc6', x @ p['fc6']['kernel'] + p['fc6']['bias'])
  x = record['fc7_act'] = unit('fc7', x @ p['fc7']['kernel'] + p['fc7']['bias'])
  return x @ p['fc8']['kernel'] + p['fc8']['bias']
