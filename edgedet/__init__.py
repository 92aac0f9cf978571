"""edgedet: train detection and segmentation models, export them with pre- and post-processing in
the graph, and run the exported graphs on video, camera and stream frames."""

__version__ = "0.1.0"
