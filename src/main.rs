//! The `cnnc` command line.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use cnnc::{Diagnostics, TypedGraph};

/// cnnc: describe, check and compile convolutional networks written in the .cnn language.
#[derive(Parser)]
#[command(name = "cnnc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a .cnn file: every model in it is elaborated and shape-checked. Silent on success.
    Check {
        /// The .cnn file.
        file: PathBuf,
    },
    /// Print a Keras-like table of a model's layers, shapes, parameters, FLOPs and memory.
    Summary {
        /// The .cnn file.
        file: PathBuf,
        /// The model to summarise, when the file defines several.
        #[arg(long)]
        model: Option<String>,
    },
    /// Print a model's dataflow graph, or draw it as a diagram (SVG and PNG need Graphviz's `dot`).
    Graph {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// Output format (default: after the output file's extension, else text).
        #[arg(long, value_enum)]
        format: Option<GraphFormat>,
        /// Write to this file instead of standard output (needed for svg and png).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Draw blocks nested deeper than this as single boxes (0: the model's own layers and
        /// blocks only) in dot, svg and png.
        #[arg(long)]
        depth: Option<usize>,
    },
    /// Compile a model and print a stage of its compilation.
    Compile {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// What to print: `graph` is the shape-inferred dataflow graph (stable text, for snapshot tests);
        /// `kernels` the inference kernel plan, `train-kernels` the training step's, `clif` the
        /// Cranelift IR of the generated inference kernels.
        #[arg(long, value_enum, default_value_t = Emit::Graph)]
        emit: Emit,
        /// The batch size the kernel plans are made for.
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Train a model (`--train fashion` or `--train DIR`) with its file's train section, or run it on images.
    Run {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// The data set to train on: `fashion` (Fashion-MNIST), or a folder of PNG/JPEG images
        /// with one sub-folder per class. Without it, the model runs forward on INPUTS.
        #[arg(long)]
        train: Option<String>,
        /// A folder holding Fashion-MNIST's files (otherwise $CNNC_DATA, the system's, or the bundled subset).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Resize images and convert their colours to fit the model's input (image folders and INPUTS).
        #[arg(long)]
        resize: bool,
        /// Epochs (overrides the train section).
        #[arg(long)]
        epochs: Option<u64>,
        /// Batch size (overrides the train section).
        #[arg(long)]
        batch: Option<u64>,
        /// Learning rate (overrides the train section).
        #[arg(long)]
        lr: Option<f64>,
        /// Optimizer (overrides the train section's, keeping its learning rate).
        #[arg(long, value_enum)]
        optimizer: Option<OptimizerArg>,
        /// Random seed (overrides the train section).
        #[arg(long)]
        seed: Option<u64>,
        /// Folder for the weights, the checkpoint and the history.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Continue from the checkpoint in the output folder, bit for bit.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Start afresh even though the output folder holds an earlier run, replacing its weights.
        #[arg(long)]
        overwrite: bool,
        /// Without --train: the weights to run with (default: OUT/MODEL.safetensors, the file
        /// training writes, when it exists; otherwise the model's initializers).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Without --train: how many classes to show per image.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Without --train: image files (PNG, JPEG) to classify.
        inputs: Vec<PathBuf>,
    },
    /// Evaluate trained weights on a data set's test images: loss, accuracy, per-class accuracy, confusion matrix.
    Eval {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// The weights (safetensors).
        #[arg(long)]
        weights: PathBuf,
        /// The data set: `fashion`, or a folder of images with one sub-folder per class.
        #[arg(long, default_value = "fashion")]
        data: String,
        /// A folder holding Fashion-MNIST's files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Resize images and convert their colours to fit the model's input (image folders).
        #[arg(long)]
        resize: bool,
        /// Also draw the confusion matrix into this picture (.png or .svg).
        #[arg(long)]
        confusion: Option<PathBuf>,
    },
    /// Classify images (top classes by name), or run the forward pass on a NumPy array into .npy.
    Predict {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// The weights (safetensors, names as `cnnc compile --emit graph` shows them).
        #[arg(long)]
        weights: PathBuf,
        /// Image files (PNG, JPEG) to classify.
        images: Vec<PathBuf>,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Resize images and convert their colours to fit the model's input.
        #[arg(long)]
        resize: bool,
        /// Instead of images: float32 .npy of shape [N, height, width, channels] (or one example).
        #[arg(long, requires = "output", conflicts_with = "images")]
        input: Option<PathBuf>,
        /// Where to write the outputs of --input (.npy; several outputs get `.NAME` before the extension).
        #[arg(long, requires = "input")]
        output: Option<PathBuf>,
        /// Examples per batch.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Draw a grid of a data set's training images with their class names (PNG).
    Show {
        /// The data set: `fashion` (Fashion-MNIST) or a folder of images with a sub-folder per class (shown at the size of its first image).
        dataset: String,
        /// The picture to write (.png).
        #[arg(short, long)]
        output: PathBuf,
        /// A folder holding the data set's files (otherwise $CNNC_DATA, the system's, or the bundled subset).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Rows of images.
        #[arg(long, default_value_t = 4)]
        rows: usize,
        /// Images per row.
        #[arg(long, default_value_t = 10)]
        cols: usize,
        /// Screen pixels per image pixel.
        #[arg(long, default_value_t = 3)]
        scale: u32,
        /// Show a random choice of images, drawn with this seed (default: the first ones).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Draw the feature maps of one layer for one or more input images (PNG).
    Maps {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// The weights (safetensors); without them, the model's initializers.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The input images (PNG or JPEG; resized to the model's input when their size differs).
        #[arg(long, required = true, num_args = 1..)]
        image: Vec<PathBuf>,
        /// The layer, by its path as `cnnc summary` or `cnnc graph` shows it.
        #[arg(long)]
        layer: String,
        /// The picture to write (.png).
        #[arg(short, long)]
        output: PathBuf,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Draw the learning curves of a training history (`cnnc run` writes MODEL.history.csv) as PNG or SVG.
    Plot {
        /// The history (CSV).
        history: PathBuf,
        /// The picture to write (.png or .svg).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Measure compile time, training and inference speed, latency and memory on random data.
    Bench {
        /// The .cnn file.
        file: PathBuf,
        /// The model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// Training batch size.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Inference batch size.
        #[arg(long, default_value_t = 256)]
        inference_batch: usize,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed training steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Also print the time of the training step's slowest kernels.
        #[arg(long)]
        profile: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// One line per node with its inputs and shape.
    Text,
    /// Graphviz DOT, with a cluster per block instance.
    Dot,
    /// An SVG diagram, drawn by Graphviz.
    Svg,
    /// A PNG diagram, drawn by Graphviz.
    Png,
}

/// The optimizers `--optimizer` names.
#[derive(Clone, Copy, ValueEnum)]
enum OptimizerArg {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with momentum (0.9 unless the train section sets it).
    Momentum,
    /// SGD with Nesterov momentum (0.9 unless the train section sets it).
    Nesterov,
    /// Adam.
    Adam,
    /// Adam with Nesterov momentum.
    Nadam,
    /// RMSprop.
    Rmsprop,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The shape-inferred dataflow graph.
    Graph,
    /// The training graph: forward, losses and backward.
    TrainGraph,
    /// The kernel plan for inference.
    Kernels,
    /// The kernel plan of one training step.
    TrainKernels,
    /// The Cranelift IR of every generated inference kernel.
    Clif,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check { file } => cnnc::check_file(file).map(|_| String::new()),
        Command::Summary { file, model } => load(file, model).map(|m| {
            let train = m.graph.train.clone().unwrap_or_default();
            cnnc::emit::summary(&m) + &cnnc::bench::memory_report(&m, &train, train.batch as usize)
        }),
        Command::Graph {
            file,
            model,
            format,
            output,
            depth,
        } => load(file, model).and_then(|m| {
            graph(&m, (*format, *depth), output.as_deref()).map_err(|e| failure(file, e))
        }),
        Command::Compile {
            file,
            model,
            emit,
            batch,
        } => load(file, model).and_then(|m| compile(&m, *emit, *batch)),
        Command::Run {
            file,
            model,
            train,
            data,
            resize,
            epochs,
            batch,
            lr,
            optimizer,
            seed,
            out,
            threads,
            resume,
            overwrite,
            weights,
            top,
            inputs,
        } => load(file, model).and_then(|m| {
            let mut config = m.graph.train.clone().unwrap_or_default();
            config.epochs = epochs.unwrap_or(config.epochs);
            config.batch = batch.unwrap_or(config.batch);
            config.optimizer.lr = lr.unwrap_or(config.optimizer.lr);
            config.seed = seed.unwrap_or(config.seed);
            if let Some(kind) = optimizer {
                set_optimizer(&mut config.optimizer, *kind);
            }
            let threads = threads.unwrap_or_else(cores);
            let data = DataArgs {
                fashion_dir: data.as_deref(),
                resize: *resize,
            };
            let result = match train {
                Some(train) => {
                    let start = (*resume, *overwrite);
                    run_training(&m, &config, train, data, out, (threads, start))
                }
                None if inputs.is_empty() => {
                    Err("give --train DATA to train the model, or image files to run it on".into())
                }
                None => run_forward(
                    &m,
                    weights.as_deref(),
                    out,
                    inputs,
                    (*resize, *top, threads),
                ),
            };
            result.map_err(|e| failure(file, e))
        }),
        Command::Eval {
            file,
            model,
            weights,
            data,
            data_dir,
            resize,
            confusion,
        } => load(file, model).and_then(|m| {
            let data_args = DataArgs {
                fashion_dir: data_dir.as_deref(),
                resize: *resize,
            };
            evaluate(
                &m,
                weights,
                (data, data_args),
                confusion.as_deref(),
                cores(),
            )
            .map_err(|e| failure(file, e))
        }),
        Command::Show {
            dataset,
            output,
            data,
            rows,
            cols,
            scale,
            seed,
        } => {
            let config = cnnc::viz::grid::GridConfig {
                rows: *rows,
                cols: *cols,
                scale: *scale,
                seed: *seed,
            };
            show(dataset, data.as_deref(), &config, output)
                .map_err(|e| Diagnostics::message(dataset, e))
        }
        Command::Maps {
            file,
            model,
            weights,
            image,
            layer,
            output,
            threads,
        } => load(file, model).and_then(|m| {
            let config = cnnc::viz::maps::MapsConfig {
                layer: layer.clone(),
                images: image.clone(),
                threads: threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            maps(&m, weights.as_deref(), &config, output).map_err(|e| failure(file, e))
        }),
        Command::Plot { history, output } => cnnc::viz::curves::read_history(history)
            .and_then(|epochs| cnnc::viz::curves::render(&epochs, output))
            .map(|()| format!("wrote {}\n", output.display()))
            .map_err(|e| failure(history, e)),
        Command::Predict {
            file,
            model,
            weights,
            images,
            top,
            resize,
            input,
            output,
            batch,
        } => load(file, model).and_then(|m| {
            let result = match (input, output) {
                (Some(input), Some(output)) => {
                    cnnc::runtime::predict::predict_npy(&m, weights, input, output, *batch, cores())
                        .map(|files| {
                            files
                                .iter()
                                .map(|f| format!("wrote {}\n", f.display()))
                                .collect()
                        })
                        .map_err(|e| e.to_string())
                }
                _ if images.is_empty() => {
                    Err("give image files to classify, or --input X.npy --output Y.npy".into())
                }
                _ => cnnc::runtime::weights::load_for(&m, weights)
                    .map_err(|e| e.to_string())
                    .and_then(|store| classify(&m, store, images, (*resize, *top, cores()))),
            };
            result.map_err(|e| failure(file, e))
        }),
        Command::Bench {
            file,
            model,
            batch,
            inference_batch,
            threads,
            steps,
            profile,
        } => load(file, model).and_then(|m| {
            let threads = threads.unwrap_or_else(cores);
            let config = cnnc::bench::BenchConfig {
                batch: *batch,
                inference_batch: *inference_batch,
                profile: *profile,
                threads,
                steps: *steps,
            };
            let train = m.graph.train.clone().unwrap_or_default();
            cnnc::bench::run(&m, &train, config)
                .map(|r| r.to_string())
                .map_err(|e| failure(file, e))
        }),
    };
    match result {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`cnnc summary m.cnn | head`) is not an error worth reporting.
            let _ = stdout.write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            eprint!("{}", diagnostics.render(color));
            ExitCode::FAILURE
        }
    }
}

fn load(file: &Path, model: &Option<String>) -> Result<TypedGraph, Diagnostics> {
    cnnc::load_model(file, model.as_deref())
}

/// What `cnnc compile --emit` prints.
fn compile(model: &TypedGraph, emit: Emit, batch: usize) -> Result<String, Diagnostics> {
    let train = model.graph.train.clone().unwrap_or_default();
    let loss = cnnc::autodiff::LossSpec {
        smoothing: train.label_smoothing,
        weights: train.loss_weights.clone(),
    };
    let at = |e: String| Diagnostics::message(&model.graph.name, e);
    match emit {
        Emit::Graph => Ok(cnnc::emit::graph_text(model)),
        Emit::TrainGraph => cnnc::autodiff::differentiate(model, &loss)
            .map(|t| cnnc::emit::graph_text(&t.typed))
            .map_err(|e| {
                at(e.iter()
                    .map(|d| d.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "))
            }),
        Emit::Clif => cnnc::plan_inference(model, batch)
            .map_err(|e| at(e.to_string()))
            .and_then(|plan| cnnc::runtime::program::clif(&plan).map_err(|e| at(e.to_string())))
            .map(|kernels| {
                kernels
                    .iter()
                    .map(|(name, clif)| format!("; kernel {name}\n{clif}\n"))
                    .collect()
            }),
        Emit::Kernels => cnnc::plan_inference(model, batch)
            .map(|p| p.to_string())
            .map_err(|e| at(e.to_string())),
        Emit::TrainKernels => cnnc::autodiff::differentiate(model, &loss)
            .map_err(|e| {
                at(e.iter()
                    .map(|d| d.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "))
            })
            .and_then(|t| {
                cnnc::plan_training(&t, batch, &train.optimizer).map_err(|e| at(e.to_string()))
            })
            .map(|p| p.to_string()),
    }
}

/// The machine's cores, the default number of worker threads.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where data comes from, besides the data set's name.
#[derive(Clone, Copy)]
struct DataArgs<'a> {
    /// Where Fashion-MNIST's files are (`--data`/`--data-dir`).
    fashion_dir: Option<&'a Path>,
    /// Resize and convert images to the model's input.
    resize: bool,
}

/// Loads `fashion` or an image folder for `model`, splitting off
/// `validation` training images (the data set's default when `None`), and
/// prints where a fallback took the data from.
fn load_splits(
    model: &TypedGraph,
    data_set: &str,
    data: DataArgs,
    (validation, seed): (Option<u64>, u64),
) -> Result<cnnc::data::Splits, String> {
    use cnnc::data::{fashion, folder};
    let splits = if data_set == "fashion" {
        let validation = validation.map_or(fashion::DEFAULT_VALIDATION, |v| v as usize);
        fashion::load(data.fashion_dir, validation, seed).map_err(|e| e.to_string())?
    } else if Path::new(data_set).is_dir() {
        let conversion = conversion(model, data.resize)?;
        let validation = validation.map(|v| v as usize);
        folder::load(Path::new(data_set), conversion, validation, seed)
            .map_err(|e| e.to_string())?
    } else {
        return Err(format!(
            "unknown data set `{data_set}`: give `fashion` (Fashion-MNIST) or a folder of images \
             with one sub-folder per class"
        ));
    };
    if let Some(note) = splits.source.note() {
        eprintln!("{note}");
    }
    Ok(splits)
}

/// How images become `model`'s input.
fn conversion(model: &TypedGraph, resize: bool) -> Result<cnnc::data::folder::Conversion, String> {
    match model.input_shape().map(|s| s.0.as_slice()) {
        Some(&[h, w, c]) => Ok(cnnc::data::folder::Conversion {
            shape: [h as usize, w as usize, c as usize],
            convert: resize,
        }),
        other => Err(format!(
            "the model's input has shape {other:?}; images need an input [height, width, channels]"
        )),
    }
}

/// `--optimizer`: another optimizer, keeping the learning rate and the
/// hyperparameters the section set.
fn set_optimizer(optimizer: &mut cnnc::train::Optimizer, kind: OptimizerArg) {
    use cnnc::train::OptimizerKind;
    optimizer.kind = match kind {
        OptimizerArg::Sgd => OptimizerKind::Sgd,
        OptimizerArg::Momentum => OptimizerKind::Momentum,
        OptimizerArg::Nesterov => OptimizerKind::Nesterov,
        OptimizerArg::Adam => OptimizerKind::Adam,
        OptimizerArg::Nadam => OptimizerKind::Nadam,
        OptimizerArg::Rmsprop => OptimizerKind::RmsProp,
    };
    let needs_momentum = matches!(kind, OptimizerArg::Momentum | OptimizerArg::Nesterov);
    if needs_momentum && optimizer.momentum == 0.0 {
        optimizer.momentum = 0.9;
    }
}

/// `cnnc graph`: the graph as text or DOT (to standard output or `output`),
/// or as a diagram drawn by Graphviz into `output`.
fn graph(
    model: &TypedGraph,
    (format, depth): (Option<GraphFormat>, Option<usize>),
    output: Option<&Path>,
) -> Result<String, String> {
    use cnnc::viz::{diagram, Format};
    let extension = output
        .and_then(|o| o.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = format.unwrap_or(match extension.as_deref() {
        Some("svg") => GraphFormat::Svg,
        Some("png") => GraphFormat::Png,
        Some("dot" | "gv") => GraphFormat::Dot,
        _ => GraphFormat::Text,
    });
    let text = match format {
        GraphFormat::Text => cnnc::emit::graph_text(model),
        GraphFormat::Dot => cnnc::emit::dot_to_depth(model, depth),
        GraphFormat::Svg | GraphFormat::Png => {
            let picture = if matches!(format, GraphFormat::Svg) {
                Format::Svg
            } else {
                Format::Png
            };
            let output = output.ok_or_else(|| {
                format!(
                    "`--format {0}` draws a picture: name the file with `-o FILE.{0}`",
                    picture.extension()
                )
            })?;
            diagram::render(&cnnc::emit::dot_to_depth(model, depth), picture, output)
                .map_err(|e| e.to_string())?;
            return Ok(format!("wrote {}\n", output.display()));
        }
    };
    match output {
        None => Ok(text),
        Some(path) => std::fs::write(path, text)
            .map(|()| format!("wrote {}\n", path.display()))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display())),
    }
}

/// `cnnc show`: a grid of a data set's training images with their class names.
fn show(
    data_set: &str,
    data: Option<&Path>,
    config: &cnnc::viz::grid::GridConfig,
    output: &Path,
) -> Result<String, String> {
    let folder = Path::new(data_set);
    let splits = if data_set == "fashion" {
        let splits = cnnc::data::fashion::load(data, 0, 0).map_err(|e| e.to_string())?;
        if let Some(note) = splits.source.note() {
            eprintln!("{note}");
        }
        splits
    } else if folder.is_dir() {
        // Every image at the size and colour of the first.
        use cnnc::data::folder;
        let shape = folder::first_shape(folder).map_err(|e| e.to_string())?;
        let conversion = folder::Conversion {
            shape,
            convert: true,
        };
        folder::load(folder, conversion, Some(0), 0).map_err(|e| e.to_string())?
    } else {
        return Err(format!(
            "unknown data set `{data_set}`: give `fashion` (Fashion-MNIST) or a folder of images with a sub-folder per class"
        ));
    };
    let shown =
        cnnc::viz::grid::render(&splits.train, config, output).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {} ({shown} training images)\n",
        output.display()
    ))
}

/// `cnnc maps`: the feature maps of one layer, with the weights given or
/// else the model's initializers.
fn maps(
    model: &TypedGraph,
    weights: Option<&Path>,
    config: &cnnc::viz::maps::MapsConfig,
    output: &Path,
) -> Result<String, String> {
    let store = match weights {
        Some(path) => cnnc::runtime::weights::load_for(model, path).map_err(|e| e.to_string())?,
        None => {
            eprintln!("no --weights: using the model's initializers (fixed filters as written, other weights random)");
            initializers(model)
        }
    };
    let maps = cnnc::viz::maps::render(model, &store, config, output).map_err(|e| e.to_string())?;
    for note in &maps.notes {
        eprintln!("{note}");
    }
    let [height, width, channels] = maps.shape;
    let images = maps.maps.len();
    let plural = if images == 1 { "" } else { "s" };
    Ok(format!(
        "wrote {} ({images} image{plural} x {channels} maps of `{}`, {height}x{width} each)\n",
        output.display(),
        maps.node
    ))
}

/// `cnnc eval`: the test set's loss, accuracy, per-class accuracy and
/// confusion matrix, which `confusion` also draws when given.
fn evaluate(
    model: &TypedGraph,
    weights: &Path,
    (data_set, data): (&str, DataArgs),
    confusion: Option<&Path>,
    threads: usize,
) -> Result<String, String> {
    let store = cnnc::runtime::weights::load_for(model, weights).map_err(|e| e.to_string())?;
    let splits = load_splits(model, data_set, data, (Some(0), 0))?;
    let top_ks = model.graph.train.clone().unwrap_or_default().top_ks();
    let report =
        cnnc::train::fit::evaluate_in_detail(model, &store, &splits.test, (&top_ks, threads))
            .map_err(|e| e.to_string())?;
    let names = &splits.test.class_names;
    let mut out = format!(
        "test: loss {:.4} accuracy {:.4}{} ({} images)\n\nper class:\n",
        report.loss,
        report.accuracy,
        top_k_text(report.top_k.iter().map(|&(k, a)| (k, a))),
        splits.test.len()
    );
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(11)
        + 1;
    for (name, accuracy) in names.iter().zip(report.per_class()) {
        out += &format!("  {name:<width$} {accuracy:.4}\n");
    }
    out += "\nconfusion (rows: true class, columns: predicted):\n";
    for (name, row) in names.iter().zip(&report.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:5}")).collect();
        out += &format!("  {name:<width$}{}\n", cells.join(""));
    }
    if let Some(path) = confusion {
        cnnc::viz::confusion::render(&report.confusion, names, path).map_err(|e| e.to_string())?;
        out += &format!("\nconfusion matrix: {}\n", path.display());
    }
    Ok(out)
}

/// `  top-5 accuracy 0.9900` for each (k, accuracy).
fn top_k_text(figures: impl Iterator<Item = (u64, f64)>) -> String {
    figures
        .map(|(k, a)| format!("  top-{k} accuracy {a:.4}"))
        .collect()
}

/// `cnnc run FILE IMAGES…`: classifies the images with the weights given,
/// or those training wrote to `out`, or the model's initializers.
fn run_forward(
    model: &TypedGraph,
    weights: Option<&Path>,
    out: &Path,
    images: &[PathBuf],
    options: (bool, usize, usize),
) -> Result<String, String> {
    use cnnc::runtime::weights;
    let trained = out.join(format!("{}.safetensors", model.graph.name));
    let store = match weights {
        Some(path) => weights::load_for(model, path),
        None if trained.is_file() => {
            eprintln!("using the weights in `{}`", trained.display());
            weights::load_for(model, &trained)
        }
        None => {
            eprintln!(
                "no weights given and no `{}`: running with the model's initializers",
                trained.display()
            );
            Ok(initializers(model))
        }
    }
    .map_err(|e| e.to_string())?;
    classify(model, store, images, options)
}

/// The weights training would start from: the initializers, drawn with the
/// train section's seed, so `cnnc maps` and `cnnc run` without weights
/// agree with each other and with epoch 0 of `cnnc run --train`.
fn initializers(model: &TypedGraph) -> cnnc::runtime::weights::TensorStore {
    let seed = model.graph.train.clone().unwrap_or_default().seed;
    cnnc::runtime::weights::init(model, seed)
}

/// Each image's top classes, as lines of text.
fn classify(
    model: &TypedGraph,
    store: cnnc::runtime::weights::TensorStore,
    images: &[PathBuf],
    (resize, top, threads): (bool, usize, usize),
) -> Result<String, String> {
    let options = cnnc::runtime::predict::ClassifyOptions {
        conversion: conversion(model, resize)?,
        top,
        threads,
    };
    let predictions = cnnc::runtime::predict::predict_images(model, store, images, options)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for p in predictions {
        out += &format!("{}\n", p.path.display());
        for (rank, (_, name, score)) in p.top.iter().enumerate() {
            out += &format!("  {}. {name:<16} {:6.2}%\n", rank + 1, 100.0 * score);
        }
    }
    Ok(out)
}

/// `cnnc run --train`: loads the data, trains, reports, and saves.
fn run_training(
    model: &TypedGraph,
    config: &cnnc::train::TrainConfig,
    data_set: &str,
    data: DataArgs,
    out: &Path,
    (threads, (resume, overwrite)): (usize, (bool, bool)),
) -> Result<String, String> {
    use cnnc::train::fit::{self, FitOptions, Progress};
    let splits = load_splits(model, data_set, data, (config.validation, config.seed))?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
    let interactive = std::io::stderr().is_terminal();
    let mut progress = |p: Progress| match p {
        Progress::Step(epoch, step, steps, loss, accuracy, rate) => {
            if interactive || step == steps || step % (steps / 10).max(1) == 0 {
                let end = if interactive { "\r" } else { "\n" };
                // A Keras-like bar: 30 cells, then the figures and the time left.
                let filled = step * 30 / steps.max(1);
                let bar: String = (0..30)
                    .map(|i| {
                        if i < filled {
                            '='
                        } else if i == filled {
                            '>'
                        } else {
                            '.'
                        }
                    })
                    .collect();
                let eta = (steps - step) as f64 * config.batch as f64 / rate.max(1e-9);
                eprint!(
                    "epoch {epoch}/{} {step:>5}/{steps} [{bar}] ETA {:>4.0}s  loss {loss:.4}  accuracy {accuracy:.4}  {rate:.0} images/s{end}",
                    config.epochs, eta
                );
            }
        }
        Progress::Epoch(e) => {
            if interactive {
                eprintln!();
            }
            println!(
                "epoch {}: loss {:.4} accuracy {:.4}{} | validation loss {:.4} accuracy {:.4}{} | {:.1} s",
                e.epoch,
                e.loss,
                e.accuracy,
                top_k_text(e.top_k.iter().map(|&(k, a, _)| (k, a))),
                e.val_loss,
                e.val_accuracy,
                top_k_text(e.top_k.iter().map(|&(k, _, v)| (k, v))),
                e.seconds
            );
        }
    };
    // Ctrl-C asks training to stop after the current step and save; a
    // second Ctrl-C ends the process at once.
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let handler = ctrlc::set_handler(|| {
        if STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    });
    let stop = handler.is_ok().then_some(&STOP);
    let options = FitOptions {
        threads,
        out: out.to_path_buf(),
        resume,
        overwrite,
        stop,
        progress: &mut progress,
    };
    let fitted = fit::fit(
        model,
        config,
        (&splits.train, &splits.validation, &splits.test),
        options,
    )
    .map_err(|e| e.to_string())?;
    let weights = out.join(format!("{}.safetensors", model.graph.name));
    cnnc::runtime::weights::save(&fitted.weights, &weights).map_err(|e| e.to_string())?;
    // Everything is saved by now: a picture that cannot be drawn is worth
    // a warning, not a failed run.
    let curves = out.join(format!("{}.learning_curves.png", model.graph.name));
    let curves = match cnnc::viz::curves::render(&fitted.history, &curves) {
        Ok(()) => format!("learning curves: {}\n", curves.display()),
        Err(e) => {
            eprintln!("warning: {e}");
            String::new()
        }
    };
    Ok(format!(
        "test: loss {:.4} accuracy {:.4} ({} images)\nweights: {}\nhistory: {}\n{curves}",
        fitted.test.0,
        fitted.test.1,
        splits.test.len(),
        weights.display(),
        out.join(format!("{}.history.csv", model.graph.name))
            .display()
    ))
}

/// A failure after the model compiled, as a diagnostic naming the file.
fn failure(file: &Path, error: impl std::fmt::Display) -> Diagnostics {
    Diagnostics::message(&file.to_string_lossy(), error.to_string())
}
