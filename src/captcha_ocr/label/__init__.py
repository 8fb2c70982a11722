"""Label a folder of captchas in the browser, with the model doing most of the typing.

``captcha-ocr label IMAGES`` serves a page and a JSON API (:mod:`.app`) over a
:class:`~captcha_ocr.label.session.LabelSession`, which ties together:

1. :mod:`.store`: the images and their labels (one ``path,label`` CSV, journaled and
   fsynced at every save; the images are only ever read);
2. :mod:`.queue`: which image comes next, and the latest model's suggestions;
3. :mod:`.rounds`: training rounds on the labels so far, each a ``captcha-ocr train``
   child process, the first from ``--pretrain synth``, later ones from the previous round.

Nothing here imports Keras or TensorFlow: training runs in the child process.
"""
