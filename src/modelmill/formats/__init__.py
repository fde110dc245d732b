"""Parsers of labelled-data formats people already have (COCO JSON, YOLO txt, Pascal VOC XML,
mask-PNG folders): files in, images with their regions (or refusals saying why) out. Pure: they
touch no database or blob store; the web upload and the CLI turn their results into inputs and
annotations.
"""
