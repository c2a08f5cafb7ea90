"""Which base image the images ModelDeck builds here (the demo model, local builds) start from.

A backend started without the scripts (menu entry, bundle, systemd unit) has no
``MODELDECK_DEMO_BASE_IMAGE`` set, yet must find the base image that ``scripts/make-base-image``
made on a machine no registry answers. The choice is made when a launch needs it, from what the
engine has at that moment:

1. ``MODELDECK_DEMO_BASE_IMAGE`` (``Settings.demo_base_image``) when set;
2. else the public slim Python image when it is here;
3. else the image ``scripts/make-base-image`` makes, when it is here;
4. else the public image, which the launch then tries to pull; when that fails, the error says
   to run ``scripts/make-base-image``.
"""

from __future__ import annotations

from collections.abc import Callable

PUBLIC_BASE_IMAGE = "python:3.12-slim"
LOCAL_BASE_IMAGE = "modeldeck/demo-base:bookworm"  # what scripts/make-base-image makes


def pick_base_image(configured: str | None, image_exists: Callable[[str], bool], *,
                    public: str = PUBLIC_BASE_IMAGE, local: str = LOCAL_BASE_IMAGE) -> str:
    """The base image to build from, by the order in this module's docstring.

    Args:
        configured: ``Settings.demo_base_image`` (``None`` or empty: choose by what is here).
        image_exists: the engine's ``image_exists``; asked at most twice.
        public, local: the two candidates (tests pass names of their own).

    Returns:
        An image reference; it may not be present yet (the public one, to be pulled).
    """
    if configured:
        return configured
    if image_exists(public):
        return public
    if image_exists(local):
        return local
    return public


def missing_base_hint(base: str, configured: str | None) -> str:
    """What to do when ``base`` is neither here nor pullable."""
    if configured:
        return (f"MODELDECK_DEMO_BASE_IMAGE names {base}, which this Docker engine does not have and could not "
                f"pull. Set it to an image that is here and has python3 (docker images), or unset it: ModelDeck "
                f"then uses {PUBLIC_BASE_IMAGE} or {LOCAL_BASE_IMAGE}, whichever is here.")
    return (f"Neither {PUBLIC_BASE_IMAGE} nor {LOCAL_BASE_IMAGE} is on this machine, and no registry answered. "
            f"Run scripts/make-base-image (as root; it makes {LOCAL_BASE_IMAGE} from Debian packages with "
            f"debootstrap), then launch again: ModelDeck finds it by itself.")
