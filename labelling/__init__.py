"""Tango labelling service: datasets, images, annotations, active learning, dataset versions.

Import images (and COCO / YOLO / VOC / Label Studio / class-folder labels) from an upload, a
folder or the store, every file checked and reported; label them (classes or boxes) with review,
bulk edits, next-image and undo; let active learning (`select`) queue what to label next and a
model (`preannotate`) suggest labels; freeze content-hashed versions (the dataset_id + version
autonn trains on) and export them as COCO, YOLO, VOC or class folders.
"""
