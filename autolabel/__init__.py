"""autolabel: product videos in, train-ready YOLO datasets out, labeled by Grounding DINO."""

__version__ = "0.1.0"
