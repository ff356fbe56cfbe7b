"""The offline demo: a width-reduced AlexNet on procedurally drawn shapes, on CPU, in minutes.

    python -m alexnet_jax.main --config=configs/demo.py --workdir=runs/demo

The first run draws 10 classes of shapes and textures as JPEG files in the ImageFolder layout
(cached under data.demo_dir), so the real decode -> transform -> batch path runs, then trains
the two-tower network at a quarter of the paper's width on small images.
"""

from configs import default


def small_network(config, width: float = 0.25):
  """The two-tower net at a fraction of the paper's width on 67x67 crops of 72-pixel images,
  10 classes: the demo's, the CPU ablations' (configs/imagenette_small.py) and the tests'."""
  config.model.num_classes = 10
  config.model.width = width
  config.data.resize_size = 72
  config.data.crop_size = 67          # conv1 11x11/4 -> 15, pools -> 7 -> 3 -> 1
  # The paper's N(0, 0.01) init leaves so narrow a net on its initial plateau for longer than
  # these runs last; fan-in scaled init on unit-scale pixels trains from the first step.
  config.model.init_scheme = 'he'
  config.model.input_scale = 1 / 64
  return config


def get_config():
  config = small_network(default.get_config())
  config.name = 'demo'
  config.data.source = 'demo'
  config.data.demo_train_per_class = 300
  config.data.demo_val_per_class = 50
  config.data.demo_image_size = 72
  config.optim.lr_policy = 'step'
  config.optim.step_epochs = (16, 22)
  config.batch_size = 64
  config.num_epochs = 25
  config.log_every_steps = 20
  config.checkpoint_every_steps = 200
  return config
