/* Band-of-rows JPEG decoding with libjpeg(-turbo).
 *
 * A top-down training crop covers part of the image, and decoding the whole image is most of a
 * sample's time (benchmarks/data_pipeline.py). libjpeg-turbo can decode a band of rows: rows above
 * it are entropy-decoded only (the Huffman stream has to be walked) and skip the inverse DCT,
 * upsampling and colour conversion (jpeg_skip_scanlines); rows below it are not decoded at all.
 * The band's pixels are the ones a full decode gives (checked on every test image, every scale,
 * progressive / restart-marker / 4:2:2 / 4:4:4 / greyscale files: tests/test_jpeg_band.py).
 * Columns are not cropped: jpeg_crop_scanline (libjpeg-turbo 2.1) changes pixels near, and with
 * 4:2:2 files away from, the cut, so the output would no longer match a full decode.
 *
 * decode(data, scale_denom, y0, y1) -> (pixels: bytearray, width, height, top, rows)
 *   data: JPEG file bytes. scale_denom: 1, 2, 4 or 8 (DCT scaling, as cv2.IMREAD_REDUCED_*).
 *   [y0, y1): rows wanted in the scaled image, clipped to it (at least one row).
 *   pixels: the whole scaled image as RGBX rows (4 bytes a pixel, width x height), of which only
 *   rows [top, top + rows) are written; the others are left uninitialised. The image keeps its
 *   size so that the caller's affine stays the same and the crop comes out bit-identical.
 * Raises ValueError on anything libjpeg reports, warnings included (corrupt data), for colour
 * spaces other than YCbCr / RGB / greyscale, and for progressive files whose scans leave low AC
 * coefficients incomplete: the caller then takes its general path. (libjpeg smooths the blocks of
 * such files, and libjpeg-turbo 3.0 changed how; the system libjpeg this module links and the
 * one in simplejpeg's / OpenCV's wheels can differ in version, and then in these pixels. Found by
 * fuzzing: tests/fuzz/regressions/jpeg/progressive-incomplete-smoothing.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} error_mgr;

static void on_error(j_common_ptr cinfo) {
    error_mgr *err = (error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* Warnings (msg_level -1: corrupt data that libjpeg works around) are errors here, as
 * simplejpeg's strict mode: the caller falls back to OpenCV, which decodes leniently. */
static void on_message(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0) on_error(cinfo);
}

/* The scanline loop, run without the GIL. It has its own setjmp: an error longjmps back here,
 * inside the GIL-released block, and not over Py_END_ALLOW_THREADS. Returns 0, or 1 on error. */
static int read_rows(struct jpeg_decompress_struct *cinfo, error_mgr *err, unsigned char *out,
                     JDIMENSION top, JDIMENSION rows, size_t stride) {
    if (setjmp(err->jump)) return 1;
    if (top > 0) jpeg_skip_scanlines(cinfo, top);
    while (cinfo->output_scanline < top + rows) {
        JSAMPROW row = out + (size_t)(cinfo->output_scanline - top) * stride;
        jpeg_read_scanlines(cinfo, &row, 1);
    }
    return 0;
}

/* Would libjpeg apply interblock smoothing (jdcoefct.c smoothing_ok: progressive, and one of the
 * first 9 AC coefficients of a component not fully known after all scans)? Conservative: the
 * quantiser conditions that also turn it off are not checked. Call after jpeg_start_decompress,
 * which has read every scan of a progressive file. */
static int may_smooth(const struct jpeg_decompress_struct *cinfo) {
    if (!cinfo->progressive_mode || cinfo->coef_bits == NULL || !cinfo->do_block_smoothing) return 0;
    for (int ci = 0; ci < cinfo->num_components; ci++)
        for (int k = 1; k < 10; k++)
            if (cinfo->coef_bits[ci][k] != 0) return 1;
    return 0;
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer data;
    int denom, y0, y1;
    struct jpeg_decompress_struct cinfo;
    error_mgr err;
    PyObject *volatile pixels = NULL;
    PyObject *result = NULL;
    volatile int failed = 0;              /* volatile: read after a longjmp */
    JDIMENSION top, rows;

    if (!PyArg_ParseTuple(args, "y*iii", &data, &denom, &y0, &y1)) return NULL;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        PyBuffer_Release(&data);
        return PyErr_Format(PyExc_ValueError, "scale_denom must be 1, 2, 4 or 8, got %d", denom);
    }
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    jpeg_create_decompress(&cinfo);
    if (setjmp(err.jump)) {
        failed = 1;
        goto done;
    }
    jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_RGB
            && cinfo.jpeg_color_space != JCS_GRAYSCALE) {
        strcpy(err.message, "colour space other than YCbCr, RGB or greyscale");
        failed = 1;
        goto done;
    }
    cinfo.out_color_space = JCS_EXT_RGBX;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)denom;
    cinfo.dct_method = JDCT_ISLOW;            /* libjpeg's default, as OpenCV and simplejpeg */
    jpeg_start_decompress(&cinfo);
    if (may_smooth(&cinfo)) {
        strcpy(err.message, "progressive scans leave AC coefficients incomplete (block smoothing differs "
                            "between libjpeg versions)");
        failed = 1;
        goto done;
    }

    /* clip the band to the scaled image, at least one row */
    if (y1 > (int)cinfo.output_height) y1 = (int)cinfo.output_height;
    if (y0 > (int)cinfo.output_height - 1) y0 = (int)cinfo.output_height - 1;
    if (y0 < 0) y0 = 0;
    if (y1 <= y0) y1 = y0 + 1;
    top = (JDIMENSION)y0;
    rows = (JDIMENSION)(y1 - y0);
    pixels = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)cinfo.output_width * cinfo.output_height * 4);
    if (pixels == NULL) goto done;
    {
        unsigned char *out = (unsigned char *)PyByteArray_AS_STRING(pixels) + (size_t)top * cinfo.output_width * 4;
        int bad;
        Py_BEGIN_ALLOW_THREADS
        bad = read_rows(&cinfo, &err, out, top, rows, (size_t)cinfo.output_width * 4);
        Py_END_ALLOW_THREADS
        if (bad) {
            failed = 1;
            goto done;
        }
    }
    result = Py_BuildValue("(Oiiii)", pixels, (int)cinfo.output_width, (int)cinfo.output_height, (int)top,
                           (int)rows);

done:
    /* destroy without jpeg_finish_decompress: the rows below the band are never decoded */
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    Py_XDECREF(pixels);
    if (failed) return PyErr_Format(PyExc_ValueError, "JPEG band decode: %s", err.message);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", py_decode, METH_VARARGS,
     "decode(data, scale_denom, y0, y1) -> (RGBX bytearray, width, height, top, rows)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpeg_band",
    "Band-of-rows JPEG decoding (libjpeg-turbo); see posedistill/csrc/jpeg_band.c.", -1, methods,
};

PyMODINIT_FUNC PyInit__jpeg_band(void) { return PyModule_Create(&module); }
