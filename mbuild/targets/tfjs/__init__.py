"""TensorFlow.js graph models (model.json + weight shards) for the web; see runtime.py."""
