"""RAS arrays ↔ SimpleITK images, and transform records that rebuild the same transform."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from vbiopsy.preprocess.sitk_bridge import compose, from_sitk, inverse_record, to_sitk, transform_from_record, \
    transform_to_record


def test_array_affine_round_trip_and_lps_geometry() -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    affine = np.array([[0, 0, 2.0, 10], [1.5, 0, 0, -20], [0, -1.0, 0, 30], [0, 0, 0, 1]])
    image = to_sitk(array, affine)
    assert image.GetSize() == (2, 3, 4)
    # voxel (1, 2, 3) in RAS mm, then LPS as SimpleITK reports it
    ras = affine @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((1, 2, 3)), [-ras[0], -ras[1], ras[2]])
    back = from_sitk(image)
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-12)


def test_transform_records_are_json_and_invertible() -> None:
    euler = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (4.0, -5.0, 6.0))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([1.1, 0.1, 0, 0, 0.9, 0, 0.05, 0, 1.0])
    affine.SetTranslation((1.0, 0.0, -2.0))
    records = json.loads(json.dumps([transform_to_record(euler), transform_to_record(affine)]))
    point = (10.0, -20.0, 30.0)
    rebuilt = transform_from_record(records[0])
    np.testing.assert_allclose(rebuilt.TransformPoint(point), euler.TransformPoint(point), atol=1e-9)
    chained = compose(records)  # euler first, then affine
    np.testing.assert_allclose(chained.TransformPoint(point), affine.TransformPoint(euler.TransformPoint(point)),
                               atol=1e-9)
    inverse = compose([inverse_record(r) for r in reversed(records)])
    np.testing.assert_allclose(inverse.TransformPoint(chained.TransformPoint(point)), point, atol=1e-6)


def test_identity_is_recorded_by_name() -> None:
    record = transform_to_record(sitk.Transform(3, sitk.sitkIdentity))
    assert record["type"] == "IdentityTransform"
    assert transform_from_record(record).TransformPoint((1.0, 2.0, 3.0)) == (1.0, 2.0, 3.0)
