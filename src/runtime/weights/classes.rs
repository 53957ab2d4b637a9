//! The class names that trained weights carry in their metadata, so that
//! `cnnc predict` can name its answers: written by training, read by
//! prediction, in one format defined here.

use super::store::TensorStore;

/// The metadata key under which trained weights keep their class names,
/// one per line, in label order.
pub const CLASS_NAMES_KEY: &str = "class_names";

/// Stores `names` (in label order) in the metadata of `store`, under
/// [`CLASS_NAMES_KEY`], replacing any names stored before.
pub fn set_class_names(store: &mut TensorStore, names: &[String]) {
    store
        .metadata
        .insert(CLASS_NAMES_KEY.into(), names.join("\n"));
}

/// The names of an output's `classes` scores: the class names stored with
/// trained weights, then `class N` for any score beyond them (training, as
/// in Keras, allows an output more scores than the data set has classes).
/// All are `class 0`, `class 1`, … when none are stored or more are stored
/// than there are scores (the names are not this output's).
pub fn class_names(store: &TensorStore, classes: usize) -> Vec<String> {
    let mut stored: Vec<String> = store
        .metadata
        .get(CLASS_NAMES_KEY)
        .map(|names| names.lines().map(str::to_string).collect())
        .unwrap_or_default();
    if stored.len() > classes {
        stored.clear();
    }
    let named = stored.len();
    stored.extend((named..classes).map(|c| format!("class {c}")));
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn stored_names_come_back_in_label_order() {
        let mut store = TensorStore::new();
        set_class_names(&mut store, &names(&["T-shirt/top", "Trouser", "Pullover"]));
        assert_eq!(
            store.metadata.get(CLASS_NAMES_KEY).map(String::as_str),
            Some("T-shirt/top\nTrouser\nPullover")
        );
        assert_eq!(
            class_names(&store, 3),
            ["T-shirt/top", "Trouser", "Pullover"]
        );
    }

    #[test]
    fn a_count_unlike_the_models_falls_back_to_numbers() {
        let mut store = TensorStore::new();
        assert_eq!(class_names(&store, 2), ["class 0", "class 1"]);
        set_class_names(&mut store, &names(&["cat", "dog", "bird"]));
        assert_eq!(class_names(&store, 2), ["class 0", "class 1"]);
    }

    #[test]
    fn scores_beyond_the_stored_names_are_numbered() {
        let mut store = TensorStore::new();
        set_class_names(&mut store, &names(&["cat", "dog"]));
        assert_eq!(class_names(&store, 4), ["cat", "dog", "class 2", "class 3"]);
    }
}
