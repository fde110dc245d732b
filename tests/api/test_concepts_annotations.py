"""Concepts and annotations over gRPC and REST: explicit and automatic concepts, labels and
regions on inputs, and bad annotations each reported with nothing half-written."""

from __future__ import annotations

import base64

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, assert_status, bomb_png, box, image_input, png, text_input
from conftest import Api


def concept_ids(api: Api) -> list[str]:
    return [c.id for c in assert_ok(api.ListConcepts(per_page=1000)).concepts]


def annotations_of(api: Api, *input_ids: str) -> list[pb.Annotation]:
    return list(
        assert_ok(api.ListAnnotations(input_ids=list(input_ids), per_page=1000)).annotations
    )


# ---- concepts --------------------------------------------------------------------------------


def test_post_concepts_then_get_and_list_them(api: Api) -> None:
    reply = assert_ok(
        api.PostConcepts(concepts=[pb.Concept(id="cat", name="Cat"), pb.Concept(id="dog")])
    )
    assert [(c.id, c.name) for c in reply.concepts] == [("cat", "Cat"), ("dog", "dog")]

    concept = assert_ok(api.GetConcept(concept_id="cat")).concept
    assert (concept.id, concept.name, concept.app_id) == ("cat", "Cat", api.app_id)
    assert concept_ids(api) == ["cat", "dog"]


def test_patch_concepts_renames_them(api: Api) -> None:
    assert_ok(api.PostConcepts(concepts=[pb.Concept(id="cat", name="Cat")]))

    reply = api.PatchConcepts(concepts=[pb.Concept(id="cat", name="Kitty")], action="overwrite")

    assert [c.name for c in assert_ok(reply).concepts] == ["Kitty"]
    assert assert_ok(api.GetConcept(concept_id="cat")).concept.name == "Kitty"


def test_concepts_are_created_by_inputs_and_annotations(api: Api) -> None:
    message = image_input("img", concepts=["cat"])
    message.data.regions.append(box(0.1, 0.1, 0.4, 0.4, "whisker"))
    assert_ok(api.PostInputs(inputs=[message]))
    assert_ok(
        api.PostAnnotations(
            annotations=[
                pb.Annotation(input_id="img", data=pb.Data(concepts=[pb.Concept(id="pet")]))
            ]
        )
    )

    assert sorted(concept_ids(api)) == ["cat", "pet", "whisker"]


def test_list_concepts_pages_until_empty(api: Api) -> None:
    assert_ok(api.PostConcepts(concepts=[pb.Concept(id=f"c{i}") for i in range(5)]))

    pages = [
        [c.id for c in assert_ok(api.ListConcepts(page=n, per_page=2)).concepts]
        for n in (1, 2, 3, 4)
    ]

    assert pages == [["c0", "c1"], ["c2", "c3"], ["c4"], []]


def test_post_concepts_with_a_taken_id_creates_none(api: Api) -> None:
    assert_ok(api.PostConcepts(concepts=[pb.Concept(id="cat")]))

    reply = api.PostConcepts(concepts=[pb.Concept(id="dog"), pb.Concept(id="cat")])

    assert_status(reply, codes.CONCEPTS_INVALID_REQUEST, "already exist", "cat")
    assert concept_ids(api) == ["cat"]


def test_post_concepts_with_a_bad_id_creates_none(api: Api) -> None:
    reply = api.PostConcepts(concepts=[pb.Concept(id="ok"), pb.Concept(id="not ok")])

    assert_status(reply, codes.CONCEPTS_INVALID_REQUEST, "not ok", "characters")
    assert concept_ids(api) == []


def test_unknown_concept_is_reported_missing(api: Api) -> None:
    assert_status(api.GetConcept(concept_id="ghost"), codes.CONN_DOES_NOT_EXIST, "ghost")
    reply = api.PatchConcepts(concepts=[pb.Concept(id="ghost", name="Boo")], action="overwrite")
    assert_status(reply, codes.CONN_DOES_NOT_EXIST, "ghost")
    assert concept_ids(api) == []


# ---- annotations -----------------------------------------------------------------------------


def test_post_annotations_adds_labels_that_inputs_show(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[image_input("img"), text_input("txt", "meow")]))
    negative = pb.Concept(id="dog", value=0.0)

    reply = api.PostAnnotations(
        annotations=[
            pb.Annotation(
                id="a1",
                input_id="img",
                data=pb.Data(concepts=[pb.Concept(id="cat", value=1.0), negative]),
            ),
            pb.Annotation(
                id="a2", input_id="txt", data=pb.Data(concepts=[pb.Concept(id="cat", value=1.0)])
            ),
        ]
    )

    assert_ok(reply)
    assert [(a.id, a.input_id) for a in reply.annotations] == [("a1", "img"), ("a2", "txt")]
    assert all(a.status.code == codes.ANNOTATION_SUCCESS for a in reply.annotations)
    image = assert_ok(api.GetInput(input_id="img")).input
    assert sorted((c.id, c.value) for c in image.data.concepts) == [("cat", 1.0), ("dog", 0.0)]
    listed = annotations_of(api, "img")
    assert [a.id for a in listed] == ["a1"]
    assert sorted((c.id, c.value) for c in listed[0].data.concepts) == [("cat", 1.0), ("dog", 0.0)]


def test_post_annotations_with_box_polygon_and_mask(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[image_input("img")]))
    polygon = pb.Region(
        region_info=pb.RegionInfo(
            polygon=pb.Polygon(
                points=[
                    pb.Point(row=0.1, col=0.1),
                    pb.Point(row=0.1, col=0.9),
                    pb.Point(row=0.8, col=0.5),
                ]
            )
        ),
        data=pb.Data(concepts=[pb.Concept(id="roof", value=1.0)]),
    )
    mask = pb.Region(
        region_info=pb.RegionInfo(mask=pb.Mask(image=pb.Image(base64=png(8, 6, (255, 255, 255))))),
        data=pb.Data(concepts=[pb.Concept(id="sky", value=1.0)]),
    )

    reply = api.PostAnnotations(
        annotations=[
            pb.Annotation(
                input_id="img",
                data=pb.Data(regions=[box(0.2, 0.3, 0.6, 0.7, "cat"), polygon, mask]),
            )
        ]
    )

    assert_ok(reply)
    regions = annotations_of(api, "img")[0].data.regions
    assert [r.data.concepts[0].id for r in regions] == ["cat", "roof", "sky"]
    found = regions[0].region_info.bounding_box
    assert [
        round(v, 4) for v in (found.top_row, found.left_col, found.bottom_row, found.right_col)
    ] == [0.2, 0.3, 0.6, 0.7]
    assert len(regions[1].region_info.polygon.points) == 3
    assert regions[2].region_info.mask.image.base64 == png(8, 6, (255, 255, 255))


def test_list_annotations_filters_by_input_and_pages(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input(f"t{i}", "x") for i in range(3)]))
    assert_ok(
        api.PostAnnotations(
            annotations=[
                pb.Annotation(
                    id=f"a{i}",
                    input_id=f"t{i}",
                    data=pb.Data(concepts=[pb.Concept(id="c", value=1.0)]),
                )
                for i in range(3)
            ]
        )
    )

    assert [a.id for a in annotations_of(api, "t1", "t2")] == ["a1", "a2"]
    first = assert_ok(api.ListAnnotations(page=1, per_page=2)).annotations
    past_end = assert_ok(api.ListAnnotations(page=3, per_page=2)).annotations
    assert [a.id for a in first] == ["a0", "a1"] and list(past_end) == []


def test_annotation_on_missing_input_is_rejected_and_the_rest_stored(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("real", "x")]))

    reply = api.PostAnnotations(
        annotations=[
            pb.Annotation(
                id="good", input_id="real", data=pb.Data(concepts=[pb.Concept(id="c", value=1.0)])
            ),
            pb.Annotation(
                id="bad", input_id="ghost", data=pb.Data(concepts=[pb.Concept(id="c2", value=1.0)])
            ),
        ]
    )

    assert_status(reply, codes.MIXED_STATUS)
    assert reply.annotations[0].status.code == codes.ANNOTATION_SUCCESS
    assert_status(
        reply.annotations[1].status, codes.ANNOTATION_INVALID_ARGUMENT, "ghost", "does not exist"
    )
    assert [a.id for a in annotations_of(api)] == ["good"]
    assert concept_ids(api) == ["c"]  # the rejected annotation made no concept


@pytest.mark.parametrize(
    ("region", "words"),
    [
        (box(0.1, 0.1, 1.2, 0.5), ("bottom_row", "0 to 1")),
        (box(-0.1, 0.1, 0.5, 0.5), ("top_row", "0 to 1")),
        (box(0.6, 0.1, 0.2, 0.5), ("inverted",)),
        (box(0.1, 0.7, 0.5, 0.3), ("inverted",)),
        (box(0.3, 0.3, 0.3, 0.6), ("empty",)),
        (
            pb.Region(
                region_info=pb.RegionInfo(
                    polygon=pb.Polygon(
                        points=[pb.Point(row=0.1, col=0.1), pb.Point(row=0.2, col=0.2)]
                    )
                )
            ),
            ("at least 3 points",),
        ),
        (
            pb.Region(region_info=pb.RegionInfo(mask=pb.Mask(image=pb.Image(base64=b"not a png")))),
            ("mask", "PNG"),
        ),
        (
            pb.Region(data=pb.Data(concepts=[pb.Concept(id="c", value=1.0)])),
            ("bounding_box", "polygon", "mask"),
        ),
    ],
    ids=[
        "below-1",
        "negative",
        "inverted-rows",
        "inverted-cols",
        "empty",
        "polygon-2-points",
        "mask-not-image",
        "no-shape",
    ],
)
def test_bad_regions_are_rejected_and_nothing_is_stored(
    api: Api, region: pb.Region, words: tuple[str, ...]
) -> None:
    assert_ok(api.PostInputs(inputs=[image_input("img")]))

    reply = api.PostAnnotations(
        annotations=[pb.Annotation(input_id="img", data=pb.Data(regions=[region]))]
    )

    assert_status(reply, codes.ANNOTATION_INVALID_ARGUMENT)
    assert_status(reply.annotations[0].status, codes.ANNOTATION_INVALID_ARGUMENT, *words)
    assert annotations_of(api) == []


def test_annotation_without_labels_is_rejected(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[image_input("img")]))

    reply = api.PostAnnotations(annotations=[pb.Annotation(input_id="img", data=pb.Data())])

    assert_status(
        reply.annotations[0].status,
        codes.ANNOTATION_INVALID_ARGUMENT,
        "no concepts, no regions and no text",
    )
    assert annotations_of(api) == []


def test_annotation_id_already_used_is_rejected(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("t", "x")]))
    label = pb.Data(concepts=[pb.Concept(id="c", value=1.0)])
    assert_ok(api.PostAnnotations(annotations=[pb.Annotation(id="same", input_id="t", data=label)]))

    reply = api.PostAnnotations(annotations=[pb.Annotation(id="same", input_id="t", data=label)])

    assert_status(
        reply.annotations[0].status, codes.ANNOTATION_INVALID_ARGUMENT, "same", "already used"
    )
    assert len(annotations_of(api)) == 1


def test_post_annotations_with_none_is_refused(api: Api) -> None:
    assert_status(
        api.PostAnnotations(annotations=[]), codes.ANNOTATION_INVALID_ARGUMENT, "no annotations"
    )


def test_mask_sent_as_base64_text_over_grpc_is_rejected(grpc_api: Api) -> None:
    assert_ok(grpc_api.PostInputs(inputs=[image_input("img")]))
    as_text = base64.b64encode(png(4, 4))
    region = pb.Region(region_info=pb.RegionInfo(mask=pb.Mask(image=pb.Image(base64=as_text))))

    reply = grpc_api.PostAnnotations(
        annotations=[pb.Annotation(input_id="img", data=pb.Data(regions=[region]))]
    )

    assert_status(reply.annotations[0].status, codes.ANNOTATION_INVALID_ARGUMENT, "mask")
    assert annotations_of(grpc_api) == []


def test_annotation_text_is_the_target_of_its_input(api: Api) -> None:
    """A text-to-text training pair: the input's text is the prompt, an annotation's data.text
    the wanted output; the input itself keeps its own text."""
    assert_ok(api.PostInputs(inputs=[text_input("q", "Translate: bonjour")]))
    target = pb.Data(text=pb.Text(raw="hello"))

    assert_ok(api.PostAnnotations(annotations=[pb.Annotation(input_id="q", data=target)]))

    (annotation,) = annotations_of(api, "q")
    assert annotation.data.text.raw == "hello"
    assert api.GetInput(input_id="q").input.data.text.raw == "Translate: bonjour"


def test_annotation_with_blank_text_is_rejected(api: Api) -> None:
    assert_ok(api.PostInputs(inputs=[text_input("q", "Translate: bonjour")]))

    reply = api.PostAnnotations(
        annotations=[pb.Annotation(input_id="q", data=pb.Data(text=pb.Text(raw="   ")))]
    )

    assert_status(reply.annotations[0].status, codes.ANNOTATION_INVALID_ARGUMENT, "text")
    assert annotations_of(api, "q") == []


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["100M-pixels", "400M-pixels"])
def test_a_mask_bomb_is_refused_with_a_status_not_an_internal_error(api: Api, side: int) -> None:
    """A few-KB PNG mask of 100 or 400 million pixels: refused before decoding (400M is above
    twice Pillow's own limit, where Pillow raised and the server answered INTERNAL_SERVER_ISSUE)."""
    assert_ok(api.PostInputs(inputs=[image_input("img")]))
    bomb = pb.Mask(image=pb.Image(base64=bomb_png(side, side)))
    region = pb.Region(region_info=pb.RegionInfo(mask=bomb))

    annotated = api.PostAnnotations(
        annotations=[pb.Annotation(input_id="img", data=pb.Data(regions=[region]))]
    )
    labelled = api.PostInputs(
        inputs=[
            pb.Input(
                id="with-mask", data=pb.Data(image=pb.Image(base64=png(8, 8)), regions=[region])
            ),
            text_input("fine", "fine"),
        ]
    )

    assert_status(
        annotated.annotations[0].status, codes.ANNOTATION_INVALID_ARGUMENT, "mask", "pixels"
    )
    assert annotations_of(api) == []
    assert_status(labelled.inputs[0].status, codes.INPUT_INVALID_ARGUMENT, "mask", "pixels")
    assert labelled.inputs[1].status.code == codes.INPUT_DOWNLOAD_SUCCESS
