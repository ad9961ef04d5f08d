"""The exceptions of img2img, split by what the caller should do about them.

    Img2ImgError
    ├── RetryableError            transient: try the same thing again later
    │   ├── StorageUnavailable    S3/SQS throttling, timeouts, 5xx
    │   ├── NotifyUnavailable     SNS/EventBridge throttling, timeouts, 5xx
    │   └── DeviceError           accelerator or runtime fault during inference
    └── PermanentError            retrying cannot help: record a failure and move on
        ├── InvalidEvent          an S3/SQS message that is not a usable notification
        ├── InvalidImage          an object that is not an acceptable image
        ├── InvalidParameters     per-image or stage parameters out of range
        ├── ObjectMissing         the uploaded object is gone
        ├── ModelLoadError        a model that cannot be found or does not fit the settings
        └── NotifyRefused         the topic or bus refused a message (missing, denied, invalid)

Retries (Prefect task retries, the dispatcher's loop) test `is_retryable` and nothing else.
"""

from __future__ import annotations


class Img2ImgError(Exception):
    """Base class of every error this package raises on purpose."""


class RetryableError(Img2ImgError):
    """A transient fault: the same call may succeed later."""


class StorageUnavailable(RetryableError):
    """S3 or SQS throttled, timed out or answered with a server error."""


class NotifyUnavailable(RetryableError):
    """SNS or EventBridge throttled, timed out or answered with a server error."""


class DeviceError(RetryableError):
    """The accelerator or its runtime failed during a call."""


class DeviceOutOfMemory(DeviceError):
    """A device call did not fit in the device's memory: the same images in smaller calls
    may (the stage splits the call before the task retries)."""


class PermanentError(Img2ImgError):
    """Bad input or configuration: retrying the same call gives the same error."""


class InvalidEvent(PermanentError):
    """A queue message that is not a usable S3 notification."""


class InvalidImage(PermanentError):
    """An uploaded object that is not an acceptable image."""


class ObjectTooLarge(InvalidImage):
    """An object over the size the pipeline reads: refused before its body is read."""


class InvalidParameters(PermanentError):
    """A per-image or stage parameter outside its allowed range."""


class ObjectMissing(PermanentError):
    """The uploaded object no longer exists."""


class ModelLoadError(PermanentError):
    """A model that cannot be loaded or does not match the stage settings."""


class NotifyRefused(PermanentError):
    """The notification topic or bus refused a message: it does not exist, the role may not
    publish to it, or the message is invalid."""


def is_retryable(exc: BaseException) -> bool:
    """True when `exc` is a transient fault worth another attempt."""
    if isinstance(exc, RetryableError):
        return True
    if isinstance(exc, PermanentError):
        return False
    # Timeouts and connection resets from the standard library and botocore.
    return isinstance(exc, (TimeoutError, ConnectionError))
