"""Labelled-data formats people already have (COCO JSON, YOLO txt, Pascal VOC XML, mask-PNG
folders): files in, images with their regions (or refusals saying why) out. Pure: no database,
blob store or API; `modelmill import` and the web upload both turn the results into inputs.
detection.py and segmentation.py parse; layouts.py finds them in a folder.
"""
