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

/// The class names stored with trained weights when there are `classes` of
/// them, else `class 0`, `class 1`, ….
pub fn class_names(store: &TensorStore, classes: usize) -> Vec<String> {
    let stored: Vec<String> = store
        .metadata
        .get(CLASS_NAMES_KEY)
        .map(|names| names.lines().map(str::to_string).collect())
        .unwrap_or_default();
    if stored.len() == classes {
        stored
    } else {
        (0..classes).map(|c| format!("class {c}")).collect()
    }
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
}
