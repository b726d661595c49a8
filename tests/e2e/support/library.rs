//! The transcoding test service (tests/proto/library.proto) served by
//! tonic, counting every call its handlers receive.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::grpc::protos::google;
use super::grpc::protos::legate::test as library;
use library::library_server::{Library, LibraryServer};
use library::{Author, BadField, Book, CreateBookRequest, FailRequest, FileRequest, GetBookRequest, ListBooksRequest, Paging, UploadRequest};

/// The test service, listening on loopback.
pub struct LibraryUpstream {
    pub address: SocketAddr,
    pub calls: Arc<AtomicUsize>,
}

impl LibraryUpstream {
    pub async fn start() -> LibraryUpstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let service = LibraryService { calls: calls.clone() };
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LibraryServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(socket))
                .await
                .unwrap();
        });
        LibraryUpstream { address, calls }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Connects a tonic client of the test service over one HTTP/2 connection.
pub async fn library_client(address: SocketAddr) -> library::library_client::LibraryClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    library::library_client::LibraryClient::new(channel)
}

#[derive(Clone)]
struct LibraryService {
    calls: Arc<AtomicUsize>,
}

/// The book GetBook returns: every request field shows in it.
fn book_for(request: &GetBookRequest) -> Book {
    let paging = request.paging.clone().unwrap_or_default();
    let Paging { size, token } = paging;
    Book {
        id: request.id,
        title: format!("book {}", request.id),
        shelf: request.shelf.clone(),
        genre: request.genre,
        authors: request.tags.iter().map(|tag| Author { name: tag.clone(), tags: vec![format!("{tag}!")] }).collect(),
        rating: request.min_rating,
        subtitle: request.paging.as_ref().map(|_| format!("page size {size} token {token}")),
        cover: if request.with_cover { vec![0, 1, 2, 255] } else { Vec::new() },
        published: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5_000_000 }),
        read_time: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
        copies: u64::MAX,
        extra: None,
    }
}

type BookStream = Pin<Box<dyn Stream<Item = Result<Book, Status>> + Send>>;

#[tonic::async_trait]
impl Library for LibraryService {
    async fn get_book(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(book_for(request.get_ref())))
    }

    async fn create_book(&self, request: Request<CreateBookRequest>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let mut book = request.book.unwrap_or_default();
        book.shelf = request.shelf;
        Ok(Response::new(book))
    }

    async fn update_book(&self, request: Request<Book>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(request.into_inner()))
    }

    async fn get_title(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(book_for(request.get_ref())))
    }

    type ListBooksStream = BookStream;

    async fn list_books(&self, request: Request<ListBooksRequest>) -> Result<Response<BookStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for id in 0..request.count {
                if id > 0 && request.delay_ms > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(request.delay_ms as u64)).await;
                }
                let book = Book { id: i64::from(id), title: format!("book {id}"), shelf: request.shelf.clone(), ..Default::default() };
                if sender.send(Ok(book)).await.is_err() {
                    return;
                }
            }
            if request.fail_code != 0 {
                let _ = sender.send(Err(Status::new(tonic::Code::from_i32(request.fail_code), "the shelf fell over"))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let detail = BadField { field: request.field.clone(), reason: "invalid".to_string() };
        let status = google::rpc::Status {
            code: request.code,
            message: request.message.clone(),
            details: vec![prost_types::Any { type_url: "type.googleapis.com/legate.test.BadField".to_string(), value: detail.encode_to_vec() }],
        };
        let code = tonic::Code::from_i32(request.code);
        Err(Status::with_details(code, request.message, status.encode_to_vec().into()))
    }

    async fn get_cover(&self, request: Request<GetBookRequest>) -> Result<Response<google::api::HttpBody>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let id = request.get_ref().id as u8;
        Ok(Response::new(google::api::HttpBody { content_type: "image/png".to_string(), data: vec![0x89, b'P', b'N', b'G', id], extensions: Vec::new() }))
    }

    async fn upload_cover(&self, request: Request<UploadRequest>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let cover = request.cover.unwrap_or_default();
        Ok(Response::new(Book { id: request.id, title: cover.content_type, cover: cover.data, ..Default::default() }))
    }

    async fn get_file(&self, request: Request<FileRequest>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(Book { title: request.into_inner().path, ..Default::default() }))
    }

    async fn echo(&self, request: Request<Book>) -> Result<Response<Book>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(request.into_inner()))
    }
}
