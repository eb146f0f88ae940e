"""Tango labelling service: datasets, images, annotations, active learning, dataset versions."""
