"""The few words fAIrytale itself prints into a book, in the book's language.

A book's own text is the story's; but the PDF, its print cover and the EPUB also carry words we
add: "The End", "by <author>", the credit line, the caption of a drawing page, and the labels an
e-reader shows for the EPUB's contents. They are printed in the plan's ``language`` (BCP 47):
``pt-BR`` takes the ``pt`` words, and a language not in :data:`BOOK_WORDS` takes the English
ones. Placeholders in braces (``{author}``, ``{model}``, ``{version}``, ``{number}``) are filled
in where the words are used, so each language puts them where its word order wants them.

Words a book's font cannot draw (Devanagari, Chinese, Japanese, a few Urdu letters with DejaVu
Sans) are treated as story text in that script is: shown as the replacement glyph, with a
warning (see :mod:`fairytale.pdf.fonts`).

>>> book_words("de-AT").the_end
'Ende'
>>> book_words("xx").by("Sam")
'by Sam'
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class BookWords:
    """Every fixed word of a book, in one language."""

    the_end: str  # the page after the story
    by_author: str  # "{author}": under the title on the title page and the credits page
    pictures_by: str  # "{model}": first half of the credit line
    made_with: str  # "{version}": second half of the credit line
    drawing_caption: str  # above the frame of a page to draw on
    book_subject: str  # the PDF's subject (its document properties)
    cover: str  # EPUB contents; the print cover PDF's title "<title> (<cover>)"
    title_page: str
    contents: str
    page: str  # "{number}"
    pages: str
    landmarks: str
    story_start: str

    def by(self, author: str) -> str:
        """The author line: ``by Sam``, ``von Sam``, ``Sam 作``."""
        return self.by_author.format(author=author)

    def credit(self, model: str, version: str) -> str:
        """The credit line: which model painted the pictures, and the fAIrytale version."""
        return f"{self.pictures_by.format(model=model)} · {self.made_with.format(version=version)}"

    def page_label(self, number: int) -> str:
        """``Page 3``, ``Seite 3``, ``第 3 页``."""
        return self.page.format(number=number)


#: The words by primary language subtag.
BOOK_WORDS: dict[str, BookWords] = {
    "en": BookWords(
        the_end="The End",
        by_author="by {author}",
        pictures_by="Pictures painted with {model}",
        made_with="made with fAIrytale {version}",
        drawing_caption="Draw your favourite part of the story",
        book_subject="A picture book made with fAIrytale",
        cover="Cover",
        title_page="Title page",
        contents="Contents",
        page="Page {number}",
        pages="Pages",
        landmarks="Landmarks",
        story_start="Start of the story",
    ),
    "de": BookWords(
        the_end="Ende",
        by_author="von {author}",
        pictures_by="Bilder gemalt mit {model}",
        made_with="erstellt mit fAIrytale {version}",
        drawing_caption="Male deine Lieblingsstelle der Geschichte",
        book_subject="Ein Bilderbuch, erstellt mit fAIrytale",
        cover="Umschlag",
        title_page="Titelseite",
        contents="Inhalt",
        page="Seite {number}",
        pages="Seiten",
        landmarks="Orientierungspunkte",
        story_start="Anfang der Geschichte",
    ),
    "fr": BookWords(
        the_end="Fin",
        by_author="par {author}",
        pictures_by="Images peintes avec {model}",
        made_with="réalisé avec fAIrytale {version}",
        drawing_caption="Dessine ton passage préféré de l’histoire",
        book_subject="Un album illustré réalisé avec fAIrytale",
        cover="Couverture",
        title_page="Page de titre",
        contents="Table des matières",
        page="Page {number}",
        pages="Pages",
        landmarks="Repères",
        story_start="Début de l’histoire",
    ),
    "es": BookWords(
        the_end="Fin",
        by_author="de {author}",
        pictures_by="Imágenes pintadas con {model}",
        made_with="hecho con fAIrytale {version}",
        drawing_caption="Dibuja tu parte favorita de la historia",
        book_subject="Un libro ilustrado hecho con fAIrytale",
        cover="Cubierta",
        title_page="Portada",
        contents="Índice",
        page="Página {number}",
        pages="Páginas",
        landmarks="Puntos de referencia",
        story_start="Inicio de la historia",
    ),
    "it": BookWords(
        the_end="Fine",
        by_author="di {author}",
        pictures_by="Immagini dipinte con {model}",
        made_with="realizzato con fAIrytale {version}",
        drawing_caption="Disegna la tua parte preferita della storia",
        book_subject="Un libro illustrato realizzato con fAIrytale",
        cover="Copertina",
        title_page="Frontespizio",
        contents="Indice",
        page="Pagina {number}",
        pages="Pagine",
        landmarks="Punti di riferimento",
        story_start="Inizio della storia",
    ),
    "pt": BookWords(
        the_end="Fim",
        by_author="de {author}",
        pictures_by="Imagens pintadas com {model}",
        made_with="feito com fAIrytale {version}",
        drawing_caption="Desenhe a sua parte favorita da história",
        book_subject="Um livro ilustrado feito com fAIrytale",
        cover="Capa",
        title_page="Folha de rosto",
        contents="Índice",
        page="Página {number}",
        pages="Páginas",
        landmarks="Pontos de referência",
        story_start="Início da história",
    ),
    "nl": BookWords(
        the_end="Einde",
        by_author="door {author}",
        pictures_by="Afbeeldingen geschilderd met {model}",
        made_with="gemaakt met fAIrytale {version}",
        drawing_caption="Teken je favoriete stukje van het verhaal",
        book_subject="Een prentenboek gemaakt met fAIrytale",
        cover="Omslag",
        title_page="Titelpagina",
        contents="Inhoud",
        page="Pagina {number}",
        pages="Pagina’s",
        landmarks="Oriëntatiepunten",
        story_start="Begin van het verhaal",
    ),
    # "Tekst:" rather than "autorstwa", which would need the author's name declined
    "pl": BookWords(
        the_end="Koniec",
        by_author="Tekst: {author}",
        pictures_by="Ilustracje namalowane modelem {model}",
        made_with="wykonano w programie fAIrytale {version}",
        drawing_caption="Narysuj swój ulubiony fragment opowieści",
        book_subject="Książka obrazkowa wykonana w programie fAIrytale",
        cover="Okładka",
        title_page="Strona tytułowa",
        contents="Spis treści",
        page="Strona {number}",
        pages="Strony",
        landmarks="Punkty orientacyjne",
        story_start="Początek opowieści",
    ),
    "tr": BookWords(
        the_end="Son",
        by_author="Yazan: {author}",
        pictures_by="Resimler {model} ile çizildi",
        made_with="fAIrytale {version} ile yapıldı",
        drawing_caption="Hikâyenin en sevdiğin bölümünü çiz",
        book_subject="fAIrytale ile yapılmış bir resimli kitap",
        cover="Kapak",
        title_page="İç kapak",
        contents="İçindekiler",
        page="Sayfa {number}",
        pages="Sayfalar",
        landmarks="Yer işaretleri",
        story_start="Hikâyenin başlangıcı",
    ),
    "ar": BookWords(
        the_end="النهاية",
        by_author="بقلم {author}",
        pictures_by="رُسمت الصور باستخدام {model}",
        made_with="صُنع باستخدام fAIrytale {version}",
        drawing_caption="ارسم جزءك المفضل من القصة",
        book_subject="كتاب مصوّر صُنع باستخدام fAIrytale",
        cover="الغلاف",
        title_page="صفحة العنوان",
        contents="المحتويات",
        page="الصفحة {number}",
        pages="الصفحات",
        landmarks="المعالم",
        story_start="بداية القصة",
    ),
    "he": BookWords(
        the_end="סוף",
        by_author="מאת {author}",
        pictures_by="האיורים צוירו בעזרת {model}",
        made_with="נוצר בעזרת fAIrytale {version}",
        drawing_caption="ציירו את החלק האהוב עליכם בסיפור",
        book_subject="ספר תמונות שנוצר בעזרת fAIrytale",
        cover="כריכה",
        title_page="עמוד שער",
        contents="תוכן העניינים",
        page="עמוד {number}",
        pages="עמודים",
        landmarks="ציוני דרך",
        story_start="תחילת הסיפור",
    ),
    # Persian keeps its zero-width non-joiners (U+200C, written \u200c): شده‌اند, ساخته‌شده
    "fa": BookWords(
        the_end="پایان",
        by_author="به قلم {author}",
        pictures_by="تصویرها با {model} نقاشی شده\u200cاند",
        made_with="ساخته\u200cشده با fAIrytale {version}",
        drawing_caption="بخش دلخواهت از داستان را نقاشی کن",
        book_subject="کتابی مصور ساخته\u200cشده با fAIrytale",
        cover="جلد",
        title_page="صفحه عنوان",
        contents="فهرست",
        page="صفحه {number}",
        pages="صفحه\u200cها",
        landmarks="نشانه\u200cها",
        story_start="آغاز داستان",
    ),
    "ur": BookWords(
        the_end="ختم شد",
        by_author="تحریر: {author}",
        pictures_by="تصاویر {model} سے بنائی گئیں",
        made_with="fAIrytale {version} کی مدد سے تیار کی گئی",
        drawing_caption="کہانی کے اپنے پسندیدہ حصے کی تصویر بنائیں",
        book_subject="fAIrytale سے تیار کی گئی تصویری کتاب",
        cover="سرورق",
        title_page="عنوان کا صفحہ",
        contents="فہرست",
        page="صفحہ {number}",
        pages="صفحات",
        landmarks="اہم مقامات",
        story_start="کہانی کا آغاز",
    ),
    "hi": BookWords(
        the_end="समाप्त",
        by_author="{author} द्वारा लिखित",
        pictures_by="चित्र {model} से बनाए गए",
        made_with="fAIrytale {version} से बनाई गई",
        drawing_caption="कहानी के अपने पसंदीदा हिस्से का चित्र बनाइए",
        book_subject="fAIrytale से बनाई गई एक चित्र-पुस्तक",
        cover="आवरण",
        title_page="शीर्षक पृष्ठ",
        contents="विषय-सूची",
        page="पृष्ठ {number}",
        pages="पृष्ठ",
        landmarks="मुख्य स्थान",
        story_start="कहानी की शुरुआत",
    ),
    "zh": BookWords(
        the_end="完",
        by_author="{author} 著",
        pictures_by="图画由 {model} 绘制",
        made_with="使用 fAIrytale {version} 制作",
        drawing_caption="画出故事中你最喜欢的部分",
        book_subject="用 fAIrytale 制作的图画书",
        cover="封面",
        title_page="扉页",
        contents="目录",
        page="第 {number} 页",
        pages="页码",
        landmarks="地标",
        story_start="故事开始",
    ),
    # spaced between phrases, as books for young children are (and so that lines can break)
    "ja": BookWords(
        the_end="おわり",
        by_author="{author} 作",
        pictures_by="絵は {model} で描かれました",
        made_with="fAIrytale {version} で作成",
        drawing_caption="おはなしの すきな ところを かいてね",
        book_subject="fAIrytale で作った絵本",
        cover="表紙",
        title_page="扉ページ",
        contents="目次",
        page="{number} ページ",
        pages="ページ",
        landmarks="ランドマーク",
        story_start="おはなしの はじまり",
    ),
    "ru": BookWords(
        the_end="Конец",
        by_author="Автор: {author}",
        pictures_by="Иллюстрации нарисованы с помощью {model}",
        made_with="создано с помощью fAIrytale {version}",
        drawing_caption="Нарисуй свою любимую часть истории",
        book_subject="Книжка с картинками, созданная с помощью fAIrytale",
        cover="Обложка",
        title_page="Титульный лист",
        contents="Содержание",
        page="Страница {number}",
        pages="Страницы",
        landmarks="Ориентиры",
        story_start="Начало истории",
    ),
    "uk": BookWords(
        the_end="Кінець",
        by_author="Автор: {author}",
        pictures_by="Ілюстрації намальовано за допомогою {model}",
        made_with="створено за допомогою fAIrytale {version}",
        drawing_caption="Намалюй свою улюблену частину історії",
        book_subject="Книжка з малюнками, створена за допомогою fAIrytale",
        cover="Обкладинка",
        title_page="Титульна сторінка",
        contents="Зміст",
        page="Сторінка {number}",
        pages="Сторінки",
        landmarks="Орієнтири",
        story_start="Початок історії",
    ),
}

FIELDS = tuple(field.name for field in fields(BookWords))


def words_language(language: str | None) -> str:
    """The key of :data:`BOOK_WORDS` whose words a book in ``language`` prints: its primary
    subtag (``pt-BR`` -> ``pt``, ``ZH-hans`` -> ``zh``) when the table has it, else ``en``."""
    primary = (language or "").replace("_", "-").split("-")[0].strip().lower()
    return primary if primary in BOOK_WORDS else "en"


def book_words(language: str | None) -> BookWords:
    """The fixed words of a book in ``language`` (BCP 47); English for a language we lack."""
    return BOOK_WORDS[words_language(language)]
