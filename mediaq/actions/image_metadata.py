"""What a photo's EXIF, XMP and IPTC say, under the names people know: camera make
and model, lens, exposure time, f-number, ISO, focal length, DPI, bit depth, when it
was taken, who made it and who owns it.

Location is private by default: GPS coordinates and altitude, and the place names of
IPTC and XMP (city, state, country, sub-location), are left out unless the step sets
``keep_gps: true``. The body serial number is never reported.

Nothing here decodes pixels: headers and metadata blocks only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image, IptcImagePlugin

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult
from mediaq.actions.image_io import DEFAULT_MAX_PIXELS, SAFE_FORMATS, read_header
from mediaq.actions.image_reasons import reading

METADATA_PARAMS: dict[str, Any] = {
    # Privacy: location stays out of output_data unless a workflow keeps it on purpose.
    "keep_gps": {"type": "boolean", "default": False},
}
# XMP packets past this are not parsed (a real one is a few kB; the limit bounds work).
_MAX_XMP = 1 << 20
_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "exifEX": "http://cipa.jp/exif/1.0/",
    "aux": "http://ns.adobe.com/exif/1.0/aux/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
}
_EXPOSURE_PROGRAMS = {
    1: "manual", 2: "program", 3: "aperture priority", 4: "shutter priority",
    5: "creative", 6: "action", 7: "portrait", 8: "landscape",
}
_COLOR_SPACES = {1: "sRGB", 2: "Adobe RGB", 0xFFFF: "uncalibrated"}
# Bits per sample of Pillow modes, where the file format does not say.
_MODE_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}
_LOCATION_FIELDS = ("gps", "city", "state", "country", "sublocation")


@action("extract_image_metadata", {
    "properties": {
        **METADATA_PARAMS,
        "max_pixels": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_PIXELS},
    },
})
def extract_image_metadata(ctx: ActionContext) -> ActionResult:
    """Camera, lens, exposure, DPI, bit depth, dates and rights from EXIF, XMP and
    IPTC, recorded in the step's output_data (location only with ``keep_gps``)."""
    ctx.check()
    header = read_header(ctx.source_path, max_pixels=int(ctx.params["max_pixels"]))
    found = image_metadata(ctx.source_path, keep_gps=bool(ctx.params["keep_gps"]))
    ctx.progress(1.0, "read")
    return ActionResult(data={"format": header.format, "width": header.width,
                              "height": header.height, "metadata": found})


def image_metadata(path: Path, *, keep_gps: bool = False) -> dict[str, Any]:
    """The named fields found in ``path`` (absent ones left out) and ``sources``: which
    of exif, xmp and iptc were present."""
    with reading(path, DEFAULT_MAX_PIXELS), Image.open(path, formats=list(SAFE_FORMATS)) as im:
        exif = im.getexif()
        xmp = _xmp_fields(im)
        iptc = _iptc_fields(im)
        found: dict[str, Any] = {}
        _technical(im, path, exif, found)
    found.update({k: v for k, v in _exif_fields(exif).items() if v is not None})
    for source in (xmp, iptc):  # EXIF first, then XMP, then the older IPTC
        for key, value in source.items():
            if value not in (None, "", []) and key not in found:
                found[key] = value
    if not keep_gps:
        for key in _LOCATION_FIELDS:
            found.pop(key, None)
    found["sources"] = [name for name, block in (("exif", len(exif)), ("xmp", xmp),
                                                 ("iptc", iptc)) if block]
    return found


# ---------------------------------------------------------------------------- EXIF


def _exif_fields(exif: Image.Exif) -> dict[str, Any]:
    base, sub = ExifTags.Base, exif.get_ifd(ExifTags.IFD.Exif)
    taken = _exif_date(sub.get(base.DateTimeOriginal), sub.get(base.OffsetTimeOriginal))
    exposure = _number(sub.get(base.ExposureTime))
    iso = sub.get(base.ISOSpeedRatings)
    flash = sub.get(base.Flash)
    return {
        "camera_make": _text(exif.get(base.Make)),
        "camera_model": _text(exif.get(base.Model)),
        "lens_make": _text(sub.get(base.LensMake)),
        "lens_model": _text(sub.get(base.LensModel)),
        "exposure_time": _shutter(exposure),
        "exposure_seconds": exposure,
        "f_number": _number(sub.get(base.FNumber)),
        "iso": int(iso[0] if isinstance(iso, tuple) else iso) if iso else None,
        "focal_length_mm": _number(sub.get(base.FocalLength)),
        "focal_length_35mm": _number(sub.get(base.FocalLengthIn35mmFilm)),
        "exposure_program": _EXPOSURE_PROGRAMS.get(sub.get(base.ExposureProgram, 0)),
        "exposure_bias_ev": _number(sub.get(base.ExposureBiasValue)),
        "flash_fired": bool(flash & 1) if isinstance(flash, int) else None,
        "color_space": _COLOR_SPACES.get(sub.get(base.ColorSpace, 0)),
        "created": taken,
        "modified": _exif_date(exif.get(base.DateTime), sub.get(base.OffsetTime)),
        "software": _text(exif.get(base.Software)),
        "artist": _text(exif.get(base.Artist)),
        "copyright": _text(exif.get(base.Copyright)),
        "description": _text(exif.get(base.ImageDescription)),
        "gps": _gps(exif.get_ifd(ExifTags.IFD.GPSInfo)),
    }


def _technical(im: Image.Image, path: Path, exif: Image.Exif, found: dict[str, Any]) -> None:
    """Orientation, DPI and bits per sample, from the file format's own header."""
    orientation = exif.get(ExifTags.Base.Orientation)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        found["orientation"] = orientation
    dpi = im.info.get("dpi") or _exif_dpi(exif)
    if dpi:
        found["dpi"] = [round(float(dpi[0]), 2), round(float(dpi[1]), 2)]
    found["bit_depth"] = _bit_depth(im, path)


def _exif_dpi(exif: Image.Exif) -> tuple[float, float] | None:
    x, y = exif.get(ExifTags.Base.XResolution), exif.get(ExifTags.Base.YResolution)
    if not x or not y:
        return None
    per_cm = exif.get(ExifTags.Base.ResolutionUnit) == 3
    factor = 2.54 if per_cm else 1.0
    return float(x) * factor, float(y) * factor


def _bit_depth(im: Image.Image, path: Path) -> int:
    if im.format == "PNG":
        with path.open("rb") as stream:
            head = stream.read(25)
        if len(head) == 25:
            return head[24]  # IHDR's bit depth
    if im.format in ("JPEG", "MPO") and isinstance(getattr(im, "bits", None), int):
        return int(im.bits)  # type: ignore[attr-defined]
    if im.format == "TIFF":
        bits = im.tag_v2.get(258)  # type: ignore[attr-defined]
        if bits:
            return int(bits[0] if isinstance(bits, tuple) else bits)
    return _MODE_BITS.get(im.mode, 8)


def _gps(gps: dict[int, Any]) -> dict[str, float] | None:
    latitude = _degrees(gps.get(2), gps.get(1), "S")
    longitude = _degrees(gps.get(4), gps.get(3), "W")
    if latitude is None or longitude is None:
        return None
    where = {"latitude": latitude, "longitude": longitude}
    altitude = _number(gps.get(6))
    if altitude is not None:
        where["altitude_m"] = -altitude if gps.get(5) in (1, b"\x01") else altitude
    return where


def _degrees(value: Any, ref: Any, negative: str) -> float | None:
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    try:
        degrees = float(value[0]) + float(value[1]) / 60 + float(value[2]) / 3600
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    sign = -1 if str(ref or "").strip().upper().startswith(negative) else 1
    return round(sign * degrees, 7)


def _exif_date(value: Any, offset: Any) -> str | None:
    """EXIF's ``YYYY:MM:DD HH:MM:SS`` (plus its offset) as ISO 8601."""
    text = _text(value)
    if not text or len(text) < 19 or text.startswith("0000"):
        return None
    iso = f"{text[0:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}"
    zone = _text(offset)
    return iso + (zone if zone and len(zone) == 6 else "")


# ----------------------------------------------------------------------------- XMP


def _xmp_fields(im: Image.Image) -> dict[str, Any]:
    raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(raw, str):
        raw = raw.encode()
    if not isinstance(raw, bytes) or not raw or len(raw) > _MAX_XMP:
        return {}
    values = _xmp_values(raw)
    if not values:
        return {}

    def first(*names: str) -> Any:
        for name in names:
            value = values.get(name)
            if value:
                return value[0] if isinstance(value, list) and len(value) == 1 else value
        return None

    rating = first("xmp:Rating")
    return {
        "title": _one(first("dc:title")),
        "description": _one(first("dc:description")),
        "creator": _one(first("dc:creator")),
        "copyright": _one(first("dc:rights")),
        "keywords": _many(values.get("dc:subject")),
        "rating": int(float(rating)) if isinstance(rating, str) and _is_number(rating) else None,
        "created": first("photoshop:DateCreated", "exif:DateTimeOriginal", "xmp:CreateDate"),
        "camera_make": first("tiff:Make"),
        "camera_model": first("tiff:Model"),
        "lens_model": first("aux:Lens", "exifEX:LensModel"),
        "city": first("photoshop:City"),
        "state": first("photoshop:State"),
        "country": first("photoshop:Country"),
        "sublocation": first("Iptc4xmpCore:Location"),
    }


def _xmp_values(raw: bytes) -> dict[str, Any]:
    """Every property of the packet's rdf:Description elements: a string, or a list
    for rdf:Seq / rdf:Bag / rdf:Alt. Expat (2.4+) refuses entity amplification and
    ElementTree never fetches external entities, so a hostile packet costs little."""
    start, end = raw.find(b"<x:xmpmeta"), raw.rfind(b"</x:xmpmeta>")
    packet = raw[start:end + len(b"</x:xmpmeta>")] if start >= 0 and end > start else raw
    try:
        root = ET.fromstring(packet)
    except ET.ParseError:
        return {}
    prefixes = {uri: prefix for prefix, uri in _NS.items()}
    values: dict[str, Any] = {}
    for description in root.iter(f"{{{_NS['rdf']}}}Description"):
        for key, value in description.attrib.items():
            name = _qualified(key, prefixes)
            if name:
                values.setdefault(name, value.strip())
        for child in description:
            name = _qualified(child.tag, prefixes)
            if not name:
                continue
            items = [li.text.strip() for li in child.iter(f"{{{_NS['rdf']}}}li") if li.text]
            values.setdefault(name, items if items else (child.text or "").strip())
    return values


def _qualified(tag: str, prefixes: dict[str, str]) -> str | None:
    if not tag.startswith("{"):
        return None
    uri, _, local = tag[1:].partition("}")
    prefix = prefixes.get(uri)
    return f"{prefix}:{local}" if prefix else None


# ---------------------------------------------------------------------------- IPTC

# IIM dataset numbers of record 2 (application record).
_IPTC = {5: "title", 25: "keywords", 80: "creator", 116: "copyright", 120: "description",
         90: "city", 95: "state", 101: "country", 92: "sublocation"}


def _iptc_fields(im: Image.Image) -> dict[str, Any]:
    try:
        info = IptcImagePlugin.getiptcinfo(im)  # type: ignore[arg-type]
    except (OSError, ValueError, SyntaxError, IndexError, TypeError):
        return {}
    if not info:
        return {}
    fields: dict[str, Any] = {}
    for number, name in _IPTC.items():
        value = info.get((2, number))
        if value is None:
            continue
        texts = [_decoded(v) for v in (value if isinstance(value, list) else [value])]
        fields[name] = texts if name == "keywords" else texts[0]
    date, time = info.get((2, 55)), info.get((2, 60))
    if isinstance(date, bytes) and len(date) == 8:
        d = date.decode("ascii", "replace")
        created = f"{d[0:4]}-{d[4:6]}-{d[6:8]}"
        if isinstance(time, bytes) and len(time) >= 6:
            t = time.decode("ascii", "replace")
            created += f"T{t[0:2]}:{t[2:4]}:{t[4:6]}"
            if len(t) == 11:
                created += f"{t[6:9]}:{t[9:11]}"
        fields["created"] = created
    return fields


# --------------------------------------------------------------------------- values


def _decoded(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").strip("\x00 ").strip()
        except UnicodeDecodeError:
            return value.decode("latin-1").strip("\x00 ").strip()
    return str(value).strip()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = _decoded(value)
    return text or None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if number != number or number in (float("inf"), float("-inf")):  # NaN, 0/0 rationals
        return None
    return round(number, 6)


def _shutter(seconds: float | None) -> str | None:
    """Exposure time as photographers write it: 1/250, 0.5, 2."""
    if seconds is None or seconds <= 0:
        return None
    if seconds < 1 and abs(1 / seconds - round(1 / seconds)) < 0.01 * (1 / seconds):
        return f"1/{round(1 / seconds)}"
    return f"{seconds:g}"


def _one(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _many(value: Any) -> list[str] | None:
    if value is None:
        return None
    return value if isinstance(value, list) else [value]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
