"""The paper's ablations as sweeps: named overrides (config field -> value) of one base config,
one sweep per claim, and the seeds of its ensembles.

Every claim of docs/paper.md that compares two networks or recipes has a sweep here; they share one
baseline, so running several into one --root trains the baseline once. experiments/sweep.py
runs them; experiments/README.md has the results. The base is the reduced Imagenette recipe
(configs/imagenette_small.py); --config=configs/paper.py (with the data fields) runs a sweep at
the paper's scale.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Sweep:
  title: str
  runs: dict[str, dict]  # run name -> {dotted config field: value}


BASE = 'configs/imagenette_small.py'  # the config file every sweep overrides, from the repository

# name -> (overrides, the paper's claim against the baseline)
ABLATIONS = {
    'baseline': ({}, 'the paper\'s recipe'),
    'tanh': ({'model.activation': 'tanh'}, 'ReLUs train several times faster (Section 3.1)'),
    'no_lrn': ({'model.lrn': False}, 'LRN: -1.4% top-1, -1.2% top-5 (Section 3.3)'),
    'pool_2x2': ({'model.pool_window': 2, 'model.pool_stride': 2},
                 'overlapping pooling: -0.4% top-1, -0.3% top-5 (Section 3.4)'),
    # Section 6.1's one-GPU net: half the kernels of conv1..conv4, conv5 and the FC layers kept.
    'one_tower_half': ({'model.towers': 1, 'model.conv_features': (48, 128, 192, 192, 256)},
                       'two towers: -1.7% top-1, -1.2% top-5 (Section 3.2)'),
    'no_lighting': ({'data.lighting_std': 0.0}, 'PCA lighting: over -1% top-1 (Section 4.1)'),
    'no_dropout': ({'model.dropout_rate': 0.0},
                   'dropout: less overfitting, twice the iterations (Section 4.2)'),
    'no_conv2': ({'model.skip_convs': (2,)}, 'any middle conv layer: about -2% top-1 (Section 7)'),
    'no_conv3': ({'model.skip_convs': (3,)}, 'any middle conv layer: about -2% top-1 (Section 7)'),
    'no_conv4': ({'model.skip_convs': (4,)}, 'any middle conv layer: about -2% top-1 (Section 7)'),
}


def _sweep(title: str, *names: str) -> Sweep:
  return Sweep(title, {n: ABLATIONS[n][0] for n in names})


# Table 2's "5 CNNs": the baseline again with other seeds (init, data order, dropout), for
# python -m alexnet_jax.evaluate --workdir=ROOT/baseline,ROOT/seed1,... (softmax averaged).
SEEDS = {f'seed{s}': {'seed': s} for s in range(1, 5)}

SWEEPS = {
    'ablations': _sweep('All ablations', *ABLATIONS),
    'relu_tanh': _sweep('ReLU vs tanh', 'baseline', 'tanh'),
    'lrn': _sweep('LRN on/off', 'baseline', 'no_lrn'),
    'pooling': _sweep('Overlapping vs non-overlapping pooling', 'baseline', 'pool_2x2'),
    'towers': _sweep('Two towers vs one tower at half width', 'baseline', 'one_tower_half'),
    'lighting': _sweep('PCA lighting on/off', 'baseline', 'no_lighting'),
    'dropout': _sweep('Dropout on/off', 'baseline', 'no_dropout'),
    'middle_conv': _sweep('Each middle conv layer removed', 'baseline', 'no_conv2', 'no_conv3',
                          'no_conv4'),
    'seeds': Sweep('The baseline with other seeds, for ensembles', {'baseline': {}, **SEEDS}),
}
