"""Triton python-backend model that runs an exported edgedet ONNX graph through ONNX Runtime.

``edgedet export --triton DIR --triton-backend python`` copies this file, unchanged, to
``DIR/<name>/<version>/model.py`` beside the graph (``model.onnx``). It runs inside Triton's
Python backend stub, never inside edgedet: it needs only numpy, onnxruntime and the
``triton_python_backend_utils`` module the backend provides, so neither edgedet nor torch has to
be installed where the server runs. edgedet itself never imports it.

Decisions:

- The graph is the same file the ORT-backend repository serves; the pre-processing, decoding
  and NMS are inside it, so this model only moves tensors between Triton and ONNX Runtime.
- Input and output names come from the model's ``config.pbtxt`` (Triton passes it to
  ``initialize``), so one file serves every exported graph.
- Requests the dynamic batcher hands over together run as one ONNX Runtime call when their
  inputs agree in everything but the batch size (frames of a dynamic-size graph may not), and the
  outputs are split back per request. Every output of an edgedet graph is per image (NMS runs per
  image), so a frame gets the same result alone or in a batch.
- An instance Triton places on a GPU uses ONNX Runtime's CUDA provider on that device when the
  installed onnxruntime has it; otherwise the CPU provider.
- A request that fails (wrong shape, wrong type) gets an error response; the other requests in
  the same call are still answered.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

GRAPH_FILE = "model.onnx"


def _providers(args):
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}),
                "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _error(e):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))


class TritonPythonModel:
    """One ONNX Runtime session per model instance."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        graph = os.path.join(os.path.dirname(os.path.abspath(__file__)), GRAPH_FILE)
        self.session = ort.InferenceSession(graph, providers=_providers(args))
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def _feed(self, request):
        return {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}

    def _run(self, feeds):
        """Outputs per request for requests whose inputs agree in all but the batch dimension."""
        if len(feeds) == 1:
            return [self.session.run(self.outputs, feeds[0])]
        sizes = [len(feed[self.inputs[0]]) for feed in feeds]
        joined = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
        values = self.session.run(self.outputs, joined)
        bounds = np.cumsum(sizes)[:-1]
        per_output = [np.split(value, bounds) for value in values]  # [output][request]
        return [list(parts) for parts in zip(*per_output)]

    def _groups(self, feeds):
        """``feeds`` (``[(request index, inputs)]``) as runs of consecutive joinable requests."""
        groups = []
        for index, feed in feeds:
            key = tuple((feed[name].dtype.str, feed[name].shape[1:]) for name in self.inputs)
            if groups and groups[-1][0] == key:
                groups[-1][1].append((index, feed))
            else:
                groups.append((key, [(index, feed)]))
        return [group for _, group in groups]

    def _response(self, values):
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in zip(self.outputs, values)])

    def _answer(self, group):
        """``[(request index, response)]`` for joinable requests; when the joined run fails, each
        request runs alone, so one bad request does not spoil the others' answers."""
        try:
            results = self._run([feed for _, feed in group])
        except Exception as e:  # noqa: BLE001 - the client gets the message
            if len(group) == 1:
                return [(group[0][0], _error(e))]
            return [pair for item in group for pair in self._answer([item])]
        return [(index, self._response(values)) for (index, _), values in zip(group, results)]

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = []
        for index, request in enumerate(requests):
            try:
                feeds.append((index, self._feed(request)))
            except Exception as e:  # noqa: BLE001 - a missing input: this request gets the error
                responses[index] = _error(e)
        for group in self._groups(feeds):
            for index, response in self._answer(group):
                responses[index] = response
        return responses
