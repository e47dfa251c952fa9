-- A tiny Pinterest-like database for the text-to-SQL suite (invented data, public domain).
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    country TEXT NOT NULL,
    joined_on TEXT NOT NULL          -- ISO date
);
CREATE TABLE boards (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    category TEXT NOT NULL           -- food, travel, home, style, diy
);
CREATE TABLE pins (
    id INTEGER PRIMARY KEY,
    board_id INTEGER NOT NULL REFERENCES boards(id),
    title TEXT NOT NULL,
    created_on TEXT NOT NULL,        -- ISO date
    is_video INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE saves (
    pin_id INTEGER NOT NULL REFERENCES pins(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    saved_on TEXT NOT NULL,          -- ISO date
    PRIMARY KEY (pin_id, user_id)
);

INSERT INTO users VALUES
 (1, 'ana', 'US', '2022-03-14'), (2, 'bo', 'DE', '2023-01-02'), (3, 'chen', 'US', '2023-06-30'),
 (4, 'dara', 'FR', '2024-02-11'), (5, 'eli', 'DE', '2024-05-20');
INSERT INTO boards VALUES
 (1, 1, 'Weeknight dinners', 'food'), (2, 1, 'Lisbon trip', 'travel'), (3, 2, 'Small balconies', 'home'),
 (4, 3, 'Capsule wardrobe', 'style'), (5, 3, 'Sourdough', 'food'), (6, 4, 'Upcycled furniture', 'diy'),
 (7, 5, 'Alps hikes', 'travel');
INSERT INTO pins VALUES
 (1, 1, 'One-pan lemon chicken', '2024-01-05', 0), (2, 1, '15-minute ramen', '2024-01-09', 1),
 (3, 2, 'Alfama at sunset', '2024-02-01', 0), (4, 3, 'Vertical herb garden', '2024-02-14', 0),
 (5, 4, 'Ten pieces, thirty outfits', '2024-03-03', 1), (6, 5, 'Starter from scratch', '2024-03-10', 0),
 (7, 5, 'Crumb shots explained', '2024-03-12', 1), (8, 6, 'Chair from pallets', '2024-04-01', 0),
 (9, 7, 'Hut-to-hut in Tyrol', '2024-04-18', 0), (10, 7, 'Packing list for the Alps', '2024-04-20', 0),
 (11, 6, 'Painting an old dresser', '2024-05-02', 1);
INSERT INTO saves VALUES
 (1, 2, '2024-01-06'), (1, 3, '2024-01-07'), (1, 4, '2024-02-01'), (2, 3, '2024-01-10'),
 (3, 5, '2024-02-03'), (4, 1, '2024-02-15'), (4, 5, '2024-02-20'), (5, 1, '2024-03-04'),
 (5, 2, '2024-03-05'), (5, 3, '2024-03-05'), (5, 4, '2024-03-06'), (6, 1, '2024-03-11'), (7, 2, '2024-03-13'),
 (8, 3, '2024-04-02'), (9, 1, '2024-04-19'), (9, 2, '2024-04-21'), (10, 3, '2024-04-22');
