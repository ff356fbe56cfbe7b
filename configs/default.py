"""The paper's recipe (docs/paper.md), field by field. Other configs start here and change a few.

Where the paper leaves a choice open, the field holds the default of docs/paper.md, "Open
readings", and says so.
"""

import os

import ml_collections

from alexnet_jax import cli


def dataset_root(config: ml_collections.ConfigDict, variable: str, unset: str) -> str:
  """The folder holding a dataset's split folders: $variable, else `unset`. The data config
  keeps the variable's name, so that a missing folder's message says what to set."""
  config.data.root_env = variable
  return os.environ.get(variable, unset)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'default'
  c.seed = 0

  # Section 3: the network. Fields mirror alexnet_jax.model.AlexNet.
  c.model = m = ml_collections.ConfigDict()
  m.arch = 'alexnet'            # 'alexnet' | 'cifar_cnn' (the CIFAR-10 net of Figure 1)
  m.num_classes = 1000
  m.towers = 2                  # the two-GPU net: grouped conv2/4/5, LRN within each tower
  m.conv_features = (96, 256, 384, 384, 256)
  m.fc_features = 4096
  m.width = 1.0
  m.activation = 'relu'         # 'relu' | 'tanh'
  m.lrn = True
  m.lrn_k = 2.0
  m.lrn_n = 5
  m.lrn_alpha = 1e-4            # docs/paper.md default: multiplies the plain sum (not alpha / n)
  m.lrn_beta = 0.75
  m.lrn_across_towers = False   # docs/paper.md default: within each tower (Caffe: across)
  m.pool_window = 3             # overlapping pooling, z = 3, s = 2
  m.pool_stride = 2
  m.conv1_padding = 0           # docs/paper.md default: 227x227 input, no padding (224 needs 2)
  m.dropout_rate = 0.5
  m.init_scheme = 'paper'        # 'paper': every kernel N(0, init_std^2) | 'he': fan-in scaled
  m.init_std = 0.01
  m.hidden_fc_init_std = ml_collections.config_dict.placeholder(float)  # fc6, fc7; None: init_std
  #                               (paper); Caffe: 0.005
  m.positive_bias = 1.0         # the biases of conv2, conv4, conv5, fc6, fc7 (Caffe: 0.1)
  m.input_std = 64.0             # pixel std that init_scheme='he' scales conv1 for
  m.input_scale = 1.0           # images are multiplied by this first (paper: raw 0-255 values)
  m.dtype = 'float32'           # compute dtype: 'float32' | 'bfloat16'
  m.skip_convs = ()             # middle conv layers (2, 3, 4) removed: Section 7's ablation

  # Sections 2 and 4.1: the data and its augmentation.
  c.data = d = ml_collections.ConfigDict()
  # Where the images come from (alexnet_jax/sources.py): 'imagefolder' | 'tfds' | 'packed' | 'demo'.
  d.source = 'imagefolder'
  d.train_dir = ''              # imagefolder: one sub-folder per synset
  d.val_dir = ''                # imagefolder: the same layout, or a flat folder with val_labels
  d.val_labels = ''             # '' | the devkit's ILSVRC2012_validation_ground_truth.txt
  #                               (meta.mat beside it) | a CSV of file name,synset
  d.root_env = ''               # the environment variable train_dir and val_dir were read from
  #                               (dataset_root), named when the folders are missing
  d.tfds_name = 'imagenet2012'  # tfds: a dataset prepared with --file_format=array_record
  d.tfds_data_dir = ''          # tfds: '' = TFDS's default (~/tensorflow_datasets)
  d.tfds_train_split = 'train'
  d.tfds_eval_split = 'validation'
  d.packed_dir = ''             # packed: the output folder of `python -m alexnet_jax.prepare`
  d.packed_quality = 95         # prepare: JPEG quality of the 256x256 records
  d.packed_shard_images = 5000  # prepare: images per ArrayRecord shard
  d.decoder = 'auto'            # 'auto': simplejpeg + OpenCV if installed, else Pillow | 'pillow'
  d.resize_size = 256           # shorter side -> 256, central 256x256 patch
  d.crop_size = 227             # docs/paper.md default: 227 (224 with model.conv1_padding = 2)
  d.flip = True
  d.lighting_std = 0.1          # PCA lighting, alpha ~ N(0, 0.1); 0 turns it off
  # 'sqrt': scale alpha_i by sqrt(lambda_i), the std along each principal axis (default, as
  # public AlexNet code does); 'eigval': by lambda_i itself, the text read literally, which on
  # 0-255 pixels shifts colours by hundreds of levels (see transforms.lighting_shift).
  d.lighting_scale = 'sqrt'
  d.stats_max_images = 0        # images sampled for the mean image and PCA; 0 = all
  d.stats_seed = 0
  d.cache_dir = '~/.cache/alexnet_jax'
  d.workers = 0                 # Grain worker processes; 0: none, the threads below decode in
  #                               the training process (BENCHMARKS.md: more images per core)
  d.threads = os.cpu_count() or 1  # decoding threads per process, one batch each; one per core
  d.demo_dir = '~/.cache/alexnet_jax/demo_shapes'
  d.demo_train_per_class = 0
  d.demo_val_per_class = 0
  d.demo_image_size = 0

  # Section 5: the optimizer and the learning-rate policy.
  c.optim = o = ml_collections.ConfigDict()
  o.base_lr = 0.01
  o.momentum = 0.9
  o.weight_decay = 5e-4
  o.decay_biases = False        # docs/paper.md default: weight decay on kernels only
  # fc8's rate is base_lr times this. Paper: 1. With K classes, K / 1000 gives fc8's share of each
  # logit's move per step as on ImageNet (alone, not enough on 10 classes: experiments/README.md).
  o.fc8_lr_scale = 1.0
  o.bias_lr_scale = 1.0         # every bias's rate is base_lr times this (paper: 1; Caffe: 2)
  o.lr_policy = 'plateau'       # 'plateau' (the paper) | 'step' (fixed epochs) | 'constant'
  o.lr_factor = 0.1             # "divided by 10"
  o.plateau_patience = 3        # evaluations without improvement before a drop (not in the paper)
  o.plateau_min_delta = 0.0     # an improvement must beat the best error by more than this
  o.max_lr_drops = 3            # "reduced three times prior to termination"
  o.step_epochs = (30, 60, 80)  # for lr_policy = 'step'
  o.step_steps = ()             # for lr_policy = 'step': drop at these steps instead (Caffe)

  # Section 3.2: the devices, as a mesh of `data` rows (each trains on a slice of the batch) by
  # `model` columns (2: one tower per device, the paper's two GPUs). See alexnet_jax.sharding.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.model = 1              # 1 | 2 | 0: 2 when there are 2+ devices and two towers, else 1

  # How the operations are computed, never what (alexnet_jax/implementations.py): 'auto' is the
  # backend's measured choice, 'plain' XLA's own forms; either may add pairs,
  # 'auto,pooling=reduce_window' or 'auto,cpu_conv_kernels=xla' (XLA:CPU's own convolutions
  # instead of YNNPACK's).
  # Not part of the model: a checkpoint resumes and evaluates under any choice.
  c.implementation = 'auto'
  # JAX's persistent compilation cache: a restarted run loads its programs instead of compiling
  # them again. '' turns it off; JAX_COMPILATION_CACHE_DIR, where set, wins.
  c.compilation_cache_dir = cli.COMPILATION_CACHE_DIR
  # 'A-B': a jax.profiler trace of steps A to B into <workdir>/profile/ (TensorBoard, Perfetto).
  c.profile_steps = ''

  c.batch_size = 128
  c.num_epochs = 90
  c.num_train_steps = -1        # > 0: stop after this many steps instead of num_epochs
  c.eval_every_steps = -1       # -1: once per epoch (the plateau rule evaluates per epoch)
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  # Every this many steps, a 'diag' row: dead ReLUs per layer and gradient, update and parameter
  # norms (alexnet_jax/diagnostics.py), at the cost of one more forward and backward pass. 0: off.
  c.diagnostics_every_steps = 100
  c.keep_checkpoints = 3         # the newest ones; the best by validation top-1 is kept too
  # A checkpoint (a workdir, its checkpoints/ folder or one step's folder; trained here or made
  # by alexnet_jax.import_weights) whose parameters a new run starts from: a fine-tune. The
  # step and optimizer start fresh; fc8 is drawn anew where model.num_classes differs.
  c.init_from = ''
  # A step whose loss or parameters are not finite stops the run (False) or is skipped and
  # counted (True); either way no checkpoint of a diverged state is ever written.
  c.skip_nonfinite_updates = False
  return c
