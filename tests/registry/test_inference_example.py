"""The endpoint page's example request uses the first row of the version's reference CSV when
it fits the signature, and runs unchanged through onnxruntime."""

import numpy as np
import onnxruntime

from registry.examples import inference_example
from registry.storage import local_path
from tests.registry import onnx_files
from tests.registry.conftest import register, validated
from tests.registry.test_batch import scaled_mlp


def test_the_example_is_the_first_reference_row(registered, scientist_actor, tmp_path):
    from registry.uploads import HashedUpload

    reference = tmp_path / "reference.csv"
    reference.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n")
    path = onnx_files.save(scaled_mlp(hidden=8), tmp_path / "mlp.onnx")
    version = validated(
        register(scientist_actor, registered, path, reference=HashedUpload.from_path(reference))
    )
    example = inference_example(version)
    assert example["source"] == "reference"
    (tensor,) = example["body"]["inputs"]
    assert tensor["shape"] == [1, 4]
    assert tensor["data"] == [5.1, 3.5, 1.4, 0.2]
    spec = version.signature["inputs"][0]
    assert (tensor["name"], tensor["datatype"]) == (spec["name"], spec["datatype"])
    session = onnxruntime.InferenceSession(str(local_path(version.model_artifact)))
    feeds = {tensor["name"]: np.array(tensor["data"], dtype=np.float32).reshape(1, 4)}
    assert session.run(None, feeds)[0].shape[0] == 1
