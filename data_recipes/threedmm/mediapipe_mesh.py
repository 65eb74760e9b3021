"""MediaPipe's canonical face mesh, read from the Face Landmarker bundle the suite already ships.

The bundle (a zip) holds `geometry_pipeline_metadata_landmarks.binarypb`, a serialised
`GeometryPipelineMetadata` protobuf (mediapipe/modules/face_geometry/protos): field 1 `canonical_mesh`
(a `Mesh3d`: 1 vertex_type, 2 primitive_type, 3 repeated float vertex_buffer = x, y, z, u, v per
vertex, 4 repeated uint32 index_buffer = triangles), field 2 repeated `procrustes_landmark_basis`
(1 landmark_id, 2 weight: the rigid points MediaPipe uses for its head pose), field 3 input_source.
It is decoded here with a few lines of protobuf wire format, so no protobuf package is needed.

The canonical mesh has 468 vertices in the 478-point landmark order (the 10 iris points are not part
of it), in centimetres, x to the subject's left (image right for a frontal face), y up, z towards the
viewer.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METADATA_NAME = "geometry_pipeline_metadata_landmarks.binarypb"
NUM_VERTICES = 468


@dataclass(frozen=True)
class CanonicalMesh:
    """vertices (468, 3) float32 cm; uv (468, 2) float32; triangles (F, 3) int64;
    procrustes_ids (K,) int64 and procrustes_weights (K,) float32 (MediaPipe's rigid pose points)."""

    vertices: np.ndarray
    uv: np.ndarray
    triangles: np.ndarray
    procrustes_ids: np.ndarray
    procrustes_weights: np.ndarray


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; value is int or bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _floats(value: bytes) -> list[float]:
    # repeated floats arrive packed (wire 2, many) or one per field (wire 5, four bytes): same bytes
    return np.frombuffer(value, dtype="<f4").tolist()


def _uints(wire: int, value) -> list[int]:
    if wire == 0:
        return [value]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(v)
    return out


def parse_metadata(buf: bytes) -> CanonicalMesh:
    """Decode a GeometryPipelineMetadata message (see the module docstring for the fields)."""
    vertex_buffer: list[float] = []
    index_buffer: list[int] = []
    ids: list[int] = []
    weights: list[float] = []
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            for n2, w2, v2 in _fields(value):
                if n2 == 3:
                    vertex_buffer.extend(_floats(v2))
                elif n2 == 4:
                    index_buffer.extend(_uints(w2, v2))
        elif number == 2 and wire == 2:
            lid, wt = 0, 0.0
            for n2, w2, v2 in _fields(value):
                if n2 == 1:
                    lid = int(v2)
                elif n2 == 2:
                    wt = float(np.frombuffer(v2, "<f4")[0])
            ids.append(lid)
            weights.append(wt)
    vb = np.asarray(vertex_buffer, dtype=np.float32)
    if vb.size % 5:
        raise ValueError(f"vertex buffer of {vb.size} floats is not x,y,z,u,v per vertex")
    vb = vb.reshape(-1, 5)
    tri = np.asarray(index_buffer, dtype=np.int64)
    if tri.size % 3:
        raise ValueError(f"index buffer of {tri.size} entries is not a triangle list")
    return CanonicalMesh(vertices=vb[:, :3].copy(), uv=vb[:, 3:].copy(), triangles=tri.reshape(-1, 3),
                         procrustes_ids=np.asarray(ids, dtype=np.int64),
                         procrustes_weights=np.asarray(weights, dtype=np.float32))


def load_canonical_mesh(task_path: Path | None = None) -> CanonicalMesh:
    """The canonical mesh from a Face Landmarker `.task` bundle (default: the suite's located copy)."""
    if task_path is None:
        from bench import weights
        from data_recipes.faces.weights import FACE_LANDMARKER

        task_path = weights.locate(FACE_LANDMARKER)
    with zipfile.ZipFile(task_path) as bundle:
        try:
            buf = bundle.read(METADATA_NAME)
        except KeyError as e:
            raise ValueError(f"{task_path} has no {METADATA_NAME}; not a Face Landmarker bundle") from e
    mesh = parse_metadata(buf)
    if len(mesh.vertices) != NUM_VERTICES:
        raise ValueError(f"{task_path}: canonical mesh has {len(mesh.vertices)} vertices, expected {NUM_VERTICES}")
    return mesh
