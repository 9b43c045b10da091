"""The Docker target: the driver (`driver.py`), the serving-image builder that Docker and
Kubernetes targets share (`images.py`), and the files an image is built from
(`Dockerfile.serving`, `build-base-image.sh`, `prepare_wheelhouse.py`; see README.md)."""
