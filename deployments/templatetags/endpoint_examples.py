"""`{% endpoint_examples endpoint as examples %}`: the endpoint page's runnable examples."""

from django import template

from registry.examples import curl_command, inference_example, tritonclient_snippet
from registry.models import ModelVersion

register = template.Library()


@register.simple_tag
def endpoint_examples(endpoint):
    """curl and tritonclient examples for the version that answers most of the traffic, or
    None when the endpoint has no URL or that version has no usable signature."""
    release = endpoint.desired_release
    if not endpoint.url or release is None or not release.variants:
        return None
    serving = [variant for variant in release.variants if variant.get("role") != "shadow"]
    if not serving:
        return None
    primary = max(serving, key=lambda variant: variant.get("weight", 0))
    version = ModelVersion.objects.filter(pk=primary.get("version_id")).first()
    example = inference_example(version)
    if example is None:
        return None
    return {
        "source": example["source"],
        "version": primary.get("version"),
        "curl": curl_command(endpoint.url, endpoint.name, example["body"]),
        "python": tritonclient_snippet(endpoint.url, endpoint.name, example["body"]),
    }
