"""The Ray engine: the local engine's stages, run by Ray tasks and actors on a cluster.

Joining the cluster and planning actors: :mod:`percept.engines.ray_cluster`; encoding:
:mod:`percept.engines.ray_encoding`; rating: :mod:`percept.engines.ray_rating`.

Images, weights and embeddings are read by path: on a cluster they must lie on storage every
node sees at the same path.
"""

from percept.engines.ray_cluster import Actors, plan_actors, session
from percept.engines.ray_encoding import encode_images, image_stream
from percept.engines.ray_rating import rate

__all__ = ["Actors", "encode_images", "image_stream", "plan_actors", "rate", "session"]
