"""Document actions: validate, extract text, render a page thumbnail, convert.

- :mod:`.identify`: what a source is, and the checks every action shares
- :mod:`.pdf`, :mod:`.docx_reader`, :mod:`.plain_text`: reading each kind
- :mod:`.office`: LibreOffice, run headless and locked down
- :mod:`.actions`: the four actions

Three kinds of document are read, told apart by their content, never by the file
name: PDF (parsed only by pdfium, so no JavaScript or form actions ever run), DOCX
(python-docx, and only after the ZIP's declared sizes passed the zip-bomb guard) and
plain text (UTF-8, or UTF-16 with a byte-order mark). Rendering a DOCX and
converting to PDF go through LibreOffice (:mod:`.office`).

pdfium is not thread-safe, not even across documents, and the worker runs jobs in
threads: every pdfium call holds :data:`PDFIUM_LOCK`, page by page, so two jobs
take turns instead of corrupting the process.
"""
