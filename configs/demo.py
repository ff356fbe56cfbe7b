"""The offline demo: a width-reduced AlexNet on procedurally drawn shapes, on CPU, in minutes.

    python -m alexnet_jax.main --config=configs/demo.py --workdir=runs/demo

The first run draws 10 classes of shapes and textures as JPEG files in the ImageFolder layout
(cached under data.demo_dir), so the real decode -> transform -> batch path runs, then trains
the two-tower network at a quarter of the paper's width on small images.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.name = 'demo'
  config.model.num_classes = 10
  config.model.width = 0.25
  config.data.source = 'demo'
  config.data.demo_train_per_class = 300
  config.data.demo_val_per_class = 50
  config.data.demo_image_size = 72
  config.data.resize_size = 72
  config.data.crop_size = 67          # conv1 11x11/4 -> 15, pools -> 7 -> 3 -> 1
  # The paper's N(0, 0.01) init leaves so narrow a net on its initial plateau for longer than
  # the demo runs; fan-in scaled init on unit-scale pixels trains from the first step.
  config.model.init_scheme = 'he'
  config.model.input_scale = 1 / 64
  config.optim.lr_policy = 'step'
  config.optim.step_epochs = (16, 22)
  config.batch_size = 64
  config.num_epochs = 25
  config.log_every_steps = 20
  config.checkpoint_every_steps = 200
  return config
